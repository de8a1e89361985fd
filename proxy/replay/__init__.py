"""Replaying recorded routing outcomes: an upstream that answers with them, and a driver that sends them."""
