"""A routing-outcome set as the replay tools read it: records in file order, and an index by prompt text.

Format (see `router_plugins.outcomes`): one JSON record a line with `messages`, `task` and
`outcomes: {model: {quality, cost_usd, cost_estimated, response}}`, and `models.json` beside the file.
Outcomes stay the parsed JSON until one is asked for: a 35 MB set with 29 models loads in about a second.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from router_plugins.outcomes import prompt_text

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one model did on one prompt."""

    quality: float
    cost_usd: float | None
    response: str | None
    cost_estimated: bool = False


@dataclass(frozen=True, slots=True)
class Record:
    id: str
    messages: tuple[dict[str, Any], ...]
    task: str | None
    outcomes: Mapping[str, Mapping[str, Any]]
    """Model name -> the outcome as stored in the file; read it through `outcome()`."""

    @property
    def prompt(self) -> str:
        """The replay key: the text of the last user message."""
        return prompt_text(self.messages)

    def outcome(self, model: str) -> Outcome | None:
        raw = self.outcomes.get(model)
        if raw is None or raw.get("quality") is None:
            return None
        cost = raw.get("cost_usd")
        response = raw.get("response")
        return Outcome(
            float(raw["quality"]),
            float(cost) if cost is not None else None,
            response if isinstance(response, str) else None,
            bool(raw.get("cost_estimated", False)),
        )


def read_records(path: str | Path, limit: int | None = None) -> list[Record]:
    """The first `limit` records of an outcome file (all when None), in file order."""
    path = Path(path)
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise FileNotFoundError(f"cannot read outcome file {path}: {exc.strerror}") from exc
    records: list[Record] = []
    with handle:
        for line_no, line in enumerate(handle, 1):
            if limit is not None and len(records) >= limit:
                break
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except ValueError as exc:
                raise ValueError(f"{path}:{line_no}: not JSON: {exc}") from exc
            messages, outcomes = raw.get("messages"), raw.get("outcomes")
            if not isinstance(messages, list) or not messages or not isinstance(outcomes, dict):
                raise ValueError(f"{path}:{line_no}: a record needs non-empty 'messages' and an 'outcomes' object")
            records.append(Record(str(raw.get("id", line_no)), tuple(messages), raw.get("task"), outcomes))
    return records


def read_model_names(path: str | Path, records: Sequence[Record]) -> tuple[str, ...]:
    """The set's models: `models.json` beside the file, else the first record's outcome keys."""
    models_path = Path(path).parent / "models.json"
    if models_path.exists():
        return tuple(json.loads(models_path.read_text(encoding="utf-8")))
    return tuple(records[0].outcomes) if records else ()


class ReplaySet:
    """Records indexed once by prompt text, so each request is one dict lookup."""

    def __init__(self, name: str, records: Sequence[Record], models: Sequence[str]) -> None:
        self.name = name
        self.models = tuple(models)
        self._model_set = frozenset(self.models)
        self._by_prompt: dict[str, Record] = {}
        self.duplicates = 0
        for record in records:
            # A prompt that occurs twice is answered from its first record (the sets' duplicates share costs).
            if self._by_prompt.setdefault(record.prompt, record) is not record:
                self.duplicates += 1
        self.records = len(records)

    @classmethod
    def load(cls, path: str | Path) -> ReplaySet:
        records = read_records(path)
        if not records:
            raise ValueError(f"{path} holds no records")
        replay = cls(str(path), records, read_model_names(path, records))
        if replay.duplicates:
            log.info("%s: %d records repeat an earlier prompt; each is answered from its first record",
                     path, replay.duplicates)  # fmt: skip
        return replay

    def has_model(self, model: str) -> bool:
        return model in self._model_set

    def find(self, messages: Sequence[dict[str, Any]]) -> Record | None:
        return self._by_prompt.get(prompt_text(messages))
