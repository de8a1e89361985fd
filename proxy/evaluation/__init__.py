"""Offline evaluation of routers and of the task classifier on recorded routing outcomes."""
