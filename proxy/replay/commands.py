"""CLI commands of the replay tools: `autoroute replay-upstream` and `autoroute eval online`."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction, eval_commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `replay-upstream` to the top-level commands and `online` to `autoroute eval`."""
