"""The online replay driver: send a set's prompts through a running gateway and feed back the recorded quality.

For each record, in file order with at most `concurrency` calls in flight: one chat completion through the
real `openai` client (model `auto` unless told otherwise), the backend the gateway chose read from the
`x-autoroute-model` header, that model's recorded quality and cost looked up in the record, and the quality
posted to `/v1/feedback` as an explicit score. The gateway's learning loop then runs as in production, and
the report shows how quality and cost move as events accumulate.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from router_plugins.progress import Progress

from .dataset import Record, read_model_names, read_records
from .report import Event, OnlineReport, baselines, build_report

MODEL_HEADER = "x-autoroute-model"
ARM_HEADER = "x-autoroute-arm"
REQUEST_ID_HEADER = "x-autoroute-request-id"
ERROR_CHARS = 300


@dataclass(frozen=True)
class OnlineSettings:
    proxy: str
    """The gateway's address, with or without `/v1`."""
    data: Path
    events: int | None = None
    """Send the first N records; None: all of them."""
    concurrency: int = 4
    window: int = 100
    model: str = "auto"
    api_key: str = "unused"
    timeout_s: float = 60.0
    drift: tuple[str, int] | None = None
    """(model, event index): from that event on, the model's answers are scored 0, as if the backend broke.
    The model `*` means the one served most often before that event (in the A/B treatment arm, when there is one)."""

    def __post_init__(self) -> None:
        for name in ("concurrency", "window"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.events is not None and self.events < 1:
            raise ValueError("events must be at least 1")
        if self.timeout_s <= 0:
            raise ValueError("the timeout must be positive")

    @property
    def root(self) -> str:
        return self.proxy.rstrip("/").removesuffix("/v1")


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:ERROR_CHARS]


class _Session:
    """The clients of one run: the openai client for completions, httpx for feedback."""

    def __init__(self, settings: OnlineSettings) -> None:
        import httpx
        import openai

        self.settings = settings
        self.done: list[Event] = []
        self.drift_model: str | None = None
        # No retries: a retried call would be a second routed request the report does not know about.
        self.client = openai.AsyncOpenAI(
            base_url=f"{settings.root}/v1", api_key=settings.api_key, timeout=settings.timeout_s, max_retries=0
        )
        self.http = httpx.AsyncClient(
            base_url=settings.root, timeout=settings.timeout_s,
            headers={"authorization": f"Bearer {settings.api_key}"},
        )  # fmt: skip

    async def close(self) -> None:
        await self.client.close()
        await self.http.aclose()

    async def send(self, index: int, record: Record) -> Event:
        started = time.perf_counter()
        base: dict[str, Any] = {"index": index, "record_id": record.id, "task": record.task}
        try:
            messages: list[Any] = [dict(m) for m in record.messages]
            raw = await self.client.chat.completions.with_raw_response.create(
                model=self.settings.model, messages=messages
            )
            raw.parse()
        except Exception as exc:  # noqa: BLE001 - a failed call is an error event, never the end of the run
            return Event(**base, latency_s=time.perf_counter() - started, error=_describe(exc))
        latency = time.perf_counter() - started
        model, request_id = raw.headers.get(MODEL_HEADER), raw.headers.get(REQUEST_ID_HEADER)
        if not model or not request_id:
            return Event(**base, latency_s=latency, error=f"the response has no {MODEL_HEADER} / {REQUEST_ID_HEADER}")
        outcome = record.outcome(model)
        if outcome is None:
            return Event(
                **base, model=model, request_id=request_id, latency_s=latency,
                error=f"the gateway chose {model!r}, which record {record.id} has no outcome for",
            )  # fmt: skip
        quality = outcome.quality
        if self.drifted(index) == model:
            quality = 0.0
        return Event(
            **base, model=model, quality=quality, cost_usd=outcome.cost_usd, request_id=request_id,
            latency_s=latency, feedback_error=await self.feedback(request_id, quality), arm=raw.headers.get(ARM_HEADER),
        )  # fmt: skip

    def drifted(self, index: int) -> str | None:
        """The model whose answers are scored 0 at this event, if any."""
        drift = self.settings.drift
        if drift is None or index < drift[1]:
            return None
        if drift[0] == "*" and self.drift_model is None:
            before = [e for e in self.done if e.model is not None and e.index < drift[1]]
            served = Counter(e.model for e in before if e.arm in (None, "treatment"))
            self.drift_model = served.most_common(1)[0][0] if served else None
        return self.drift_model if drift[0] == "*" else drift[0]

    async def feedback(self, request_id: str, score: float) -> str | None:
        """Post the recorded quality; the error, or None when the gateway took it."""
        try:
            response = await self.http.post("/v1/feedback", json={"request_id": request_id, "score": score})
        except Exception as exc:  # noqa: BLE001 - counted in the report, the run goes on
            return _describe(exc)
        if response.status_code != 200:
            return f"HTTP {response.status_code}: {response.text}"[:ERROR_CHARS]
        return None


async def run_events(settings: OnlineSettings, records: Sequence[Record]) -> list[Event]:
    """One event per record, in record order; at most `settings.concurrency` calls in flight."""
    session = _Session(settings)
    results: list[Event | None] = [None] * len(records)
    pending = iter(enumerate(records))
    progress = Progress("replaying", len(records), "requests")

    async def worker() -> None:
        # Workers share one iterator, so records start in file order whatever finishes first.
        for index, record in pending:
            results[index] = event = await session.send(index, record)
            session.done.append(event)
            progress.update()

    try:
        await asyncio.gather(*(worker() for _ in range(min(settings.concurrency, len(records)))))
    finally:
        progress.close()
        await session.close()
    return [e for e in results if e is not None]


async def drive(settings: OnlineSettings, records: Sequence[Record] | None = None) -> OnlineReport:
    """Run the online replay against a running gateway and aggregate what happened."""
    if records is None:
        records = read_records(settings.data, settings.events)
    else:
        records = records[: settings.events]
    if not records:
        raise ValueError(f"{settings.data} holds no records")
    for name in ("httpx", "openai"):
        # One INFO line per request would bury the report.
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger(name).level))
    started = time.perf_counter()
    events = await run_events(settings, records)
    elapsed = time.perf_counter() - started
    fixed = baselines(records, read_model_names(settings.data, records))
    return build_report(events, settings.window, elapsed, fixed)


def settings_json(settings: OnlineSettings) -> dict[str, Any]:
    """The run's settings for the JSON report, without the client key."""
    return {
        "proxy": settings.root, "data": str(settings.data), "events": settings.events,
        "concurrency": settings.concurrency, "window": settings.window, "model": settings.model,
        "timeout_s": settings.timeout_s,
    }  # fmt: skip
