"""The HTTP API: OpenAI's chat completions and models, feedback, health."""

from __future__ import annotations

import asyncio
import hmac
import math
import os
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from router_plugins.datadir import quarantined
from router_plugins.types import PREFERENCES

from .drain import ShuttingDown
from .errors import ApiError, bad_request, model_not_found, unauthorized
from .events import DecisionRecord, FeedbackRecord
from .pipeline import Completed
from .validation import load_json, parse_chat_request

if TYPE_CHECKING:
    from .gateway import Services
    from .runtime import Runtime

router = APIRouter()

MAX_BODY_BYTES = 20 * 1024 * 1024
MAX_COMMENT_CHARS = 4000
MAX_LABEL_CHARS = 100
STORE_PROBE_S = 1.0
"""Readiness answers within about this long, whatever the store does."""
_JSON_HEADERS = {"cache-control": "no-store"}


def _services(request: Request) -> Services:
    return request.app.state.services


def _authorize(request: Request, runtime: Runtime) -> None:
    auth_error = _services(request).holder.auth_error
    if auth_error:  # fail closed: an auth change that could not be applied must not leave the old keys (or none)
        raise ApiError(503, f"The gateway refuses requests until its auth config is fixed: {auth_error}.",
                       type="server_error", code="auth_misconfigured", headers={"x-should-retry": "false"})  # fmt: skip
    if not runtime.api_keys:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise unauthorized()
    supplied = token.strip().encode()
    # Compare against every key, always: the time taken must not say which key, or how much of one, matched.
    matched = False
    for key in runtime.api_keys:
        matched |= hmac.compare_digest(supplied, key)
    if not matched:
        raise unauthorized()


async def _body(request: Request) -> bytes:
    """The body, read as it arrives and refused once it passes MAX_BODY_BYTES, whatever its framing (a chunked body
    says no length up front)."""
    too_large = ApiError(413, f"The body is larger than {MAX_BODY_BYTES} bytes.", code="request_too_large")
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


@router.post("/v1/chat/completions")
@router.post("/chat/completions", include_in_schema=False)
async def chat_completions(request: Request) -> Response:
    services = _services(request)
    runtime = services.holder.current
    request.state.request_id = request_id = f"ar-{uuid.uuid4().hex}"
    if services.drain.draining:
        raise ShuttingDown("The gateway is shutting down and takes no new requests; retry the request.")
    _authorize(request, runtime)
    created_at = time.time()
    try:
        chat = parse_chat_request(await _body(request), request_id, runtime.registry.router.default_preference,
                                  request.headers.get("x-autoroute-session"))  # fmt: skip
    except ApiError as exc:  # recorded like every other request (a stranger's, refused by auth above, is not)
        services.recorder.record(DecisionRecord.refused(request_id, created_at, exc.code, exc.message))
        raise
    result = await services.pipeline.handle(chat)
    if isinstance(result, Completed):
        return JSONResponse(result.body, headers=result.headers)
    return StreamingResponse(
        result.chunks,  # type: ignore[arg-type]
        media_type="text/event-stream",
        headers={**result.headers, "cache-control": "no-cache", "x-accel-buffering": "no"},
    )


def _models(runtime: Runtime) -> list[dict[str, Any]]:
    """OpenAI's model objects: the auto variants, then the registry's enabled models."""
    created = int(runtime.loaded_at)
    data: list[dict[str, Any]] = [
        {"id": name, "object": "model", "created": created, "owned_by": "autoroute"}
        for name in ("auto", *(f"auto:{p}" for p in PREFERENCES))
    ]
    for model in runtime.registry.models:
        if model.enabled:
            data.append(
                {
                    "id": model.name,
                    "object": "model",
                    "created": created,
                    "owned_by": model.litellm_params.model.split("/", 1)[0],
                    "available": model.name in runtime.available_names,
                }
            )
    return data


@router.get("/v1/models")
@router.get("/models", include_in_schema=False)
async def list_models(request: Request) -> Response:
    runtime = _services(request).holder.current
    _authorize(request, runtime)
    return JSONResponse({"object": "list", "data": _models(runtime)}, headers=_JSON_HEADERS)


# `:path`: registry names may hold slashes (`openai/gpt-4o`), which clients send as they are or as %2F.
@router.get("/v1/models/{model:path}")
@router.get("/models/{model:path}", include_in_schema=False)
async def retrieve_model(request: Request, model: str) -> Response:
    if not model:  # `/v1/models/`: a path like any unknown one, not a model (nor a redirect to the list)
        raise HTTPException(404)
    runtime = _services(request).holder.current
    _authorize(request, runtime)
    found = next((entry for entry in _models(runtime) if entry["id"] == model), None)
    if found is None:
        raise model_not_found(model)
    return JSONResponse(found, headers=_JSON_HEADERS)


@router.post("/v1/feedback")
async def feedback(request: Request) -> Response:
    services = _services(request)
    _authorize(request, services.holder.current)
    data = load_json(await _body(request))
    record = _parse_feedback(data, {t.name for t in services.holder.current.registry.tasks})
    if services.store_error:
        raise ApiError(503, "Feedback cannot be recorded: the gateway's store is unavailable (see /health/readiness).",
                       type="server_error", code="store_unavailable", headers={"retry-after": "30"})  # fmt: skip
    try:
        known = await services.recorder.knows(record.request_id)
    except Exception as exc:  # noqa: BLE001 - a store that cannot answer must not turn into a wrong 404
        raise ApiError(503, "The store cannot be read right now; retry later.", type="server_error") from exc
    if not known:
        raise ApiError(
            404, f"No request with id '{record.request_id}' was routed here.", param="request_id",
            code="request_not_found",
        )  # fmt: skip
    # 200 only once the row is committed and synced (a crash after it keeps the row); NotDurable answers 503.
    await services.feedback_writer.write(record)
    return JSONResponse(
        {
            "object": "feedback",
            "request_id": record.request_id,
            "score": record.score,
            **record.extra,
            "status": "recorded",
        }
    )


def _parse_feedback(data: Any, task_names: set[str]) -> FeedbackRecord:
    if not isinstance(data, dict):
        raise bad_request("The body must be a JSON object.")
    unknown = set(data) - {"request_id", "score", "thumbs", "comment", "label", "task"}
    if unknown:
        raise bad_request(
            f"Unrecognized field: {sorted(unknown)[0]}", param=sorted(unknown)[0], code="unknown_parameter"
        )
    request_id = data.get("request_id")
    if not isinstance(request_id, str) or not request_id:
        raise bad_request("'request_id' is required: the x-autoroute-request-id of the call.", param="request_id")
    task = data.get("task")
    if task is not None and (not isinstance(task, str) or task not in task_names):
        raise bad_request(
            f"'task' must be one of the registry's task types: {', '.join(sorted(task_names))}.", param="task",
            code="unknown_task",
        )  # fmt: skip
    score, thumbs = data.get("score"), data.get("thumbs")
    if score is not None and thumbs is not None or (score is None and thumbs is None and task is None):
        raise bad_request(
            "Send exactly one of 'score' (0..1) or 'thumbs' ('up' or 'down'), and/or the request's right 'task'.",
            param="score",
        )  # fmt: skip
    label = data.get("label")
    # Checked before `thumbs` fills in a missing one: a falsy non-string (0, []) was silently replaced.
    if label is not None and (not isinstance(label, str) or len(label) > MAX_LABEL_CHARS):
        raise bad_request("'label' must be a short string.", param="label")
    if thumbs is not None:
        if thumbs not in ("up", "down"):
            raise bad_request("'thumbs' must be 'up' or 'down'.", param="thumbs")
        score, label = (1.0 if thumbs == "up" else 0.0), label or f"thumbs_{thumbs}"
    elif score is not None and not _is_unit_number(score):
        raise bad_request("'score' must be a number from 0 to 1.", param="score")
    comment = data.get("comment")
    if comment is not None and (not isinstance(comment, str) or len(comment) > MAX_COMMENT_CHARS):
        raise bad_request(f"'comment' must be a string of at most {MAX_COMMENT_CHARS} characters.", param="comment")
    extra = {"task": task} if task is not None else {}
    return FeedbackRecord(
        request_id, time.time(), None if score is None else float(score), label, comment, "api", extra
    )


def _is_unit_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and 0 <= value <= 1


@router.get("/health/liveness")
async def liveness() -> Response:
    return JSONResponse({"status": "alive"})


_probes: dict[int, asyncio.Future[None]] = {}


async def _probe_store(services: Services) -> str | None:
    """Why the store is not writable, or None; answers within STORE_PROBE_S. A probe still stuck (a locked database)
    is waited on again rather than piling up another thread."""
    key = id(services.store)
    probe = _probes.get(key)
    if probe is None or probe.done():
        probe = _probes[key] = asyncio.ensure_future(asyncio.to_thread(services.store.check_writable))
    try:
        await asyncio.wait_for(asyncio.shield(probe), STORE_PROBE_S)
    except TimeoutError:
        return f"not answering within {STORE_PROBE_S:g} s (locked?)"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        return f"not writable: {type(exc).__name__}"
    return None


@router.get("/health/readiness")
async def readiness(request: Request) -> Response:
    services = _services(request)
    checks: dict[str, Any] = {
        "config": "ok", "store": "ok", "embeddings": services.embeddings, "task_model": services.task_model,
    }  # fmt: skip
    status = 200
    drain = services.drain
    if drain.draining:
        checks["shutdown"] = f"draining: {drain.in_flight} request(s) in flight, new chats refused"
        status = 503
    if services.holder.auth_error:
        checks["config"] = f"refusing every API call: {services.holder.auth_error}"
        status = 503
    elif services.holder.last_error:
        checks["config"] = f"serving the last good config; the file has an error: {services.holder.last_error}"
    if services.store_error:
        checks["store"] = f"{services.store_error}; chats are served but not recorded, feedback is refused"
        status = 503
    elif not services.data_dir.is_dir() or (services.store.path is not None and not services.store.path.is_file()):
        checks["store"] = f"the data directory {services.data_dir} or its database is gone"
        status = 503
    else:
        problem = await _probe_store(services)
        if problem:
            checks["store"] = problem
            status = 503
    damaged = [q for q in quarantined() if str(q["file"]).startswith(str(services.data_dir))]
    if damaged:  # serving goes on with what they would have replaced: reported, not fatal
        checks["artifacts"] = "damaged files moved aside: " + ", ".join(
            f"{Path(str(q['file'])).name} ({q['reason']})" for q in damaged[-5:]
        )
    stats, durable = services.recorder.stats, services.feedback_writer.stats
    body = {
        "status": "shutting_down" if drain.draining else "ready" if status == 200 else "not_ready",
        "checks": checks,
        "models_available": len(services.holder.current.available),
        "registry_version": services.holder.current.registry.version,
        "recorder": {"written": stats.written, "dropped": stats.dropped, "lost": stats.lost,
                     "queue_depth": stats.queue_depth, "pending": stats.pending},
        "feedback": {"written": durable.written, "failed": durable.failed, "commits": durable.commits},
        "circuit_breaker": services.breaker.snapshot(
            time.monotonic(), (m.name for m in services.holder.current.registry.models)
        ),
        "worker": {"pid": os.getpid(), "leader": services.election.leading,
                   "leader_pid": services.election.leader_pid()},
    }  # fmt: skip
    return JSONResponse(body, status_code=status)
