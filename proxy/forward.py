"""Forwarding to a registry backend through LiteLLM, and turning what comes back into OpenAI's wire shapes.

LiteLLM is imported when the Forwarder is built (in the app's lifespan), never at module import: it takes
seconds to import and the CLI's other commands do not need it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from router_plugins.prices import resolve_prices
from router_plugins.registry import ModelEntry, Registry
from router_plugins.types import ChatRequest

from .redact import configured_secrets, redact

log = logging.getLogger(__name__)

NO_KEY = "no-key-configured"
"""Sent when a model names no key variable, so LiteLLM never falls back to a provider key from the environment."""
_MESSAGE_FIELDS = ("role", "content", "tool_calls", "function_call", "refusal", "reasoning_content", "audio")


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    provider_cost: float | None = None
    """Cost the provider reported in `usage.cost`, when it does."""


class UpstreamError(Exception):
    """A backend failed. `retryable` says whether another backend may succeed where this one did not; `transient`
    whether the same call may succeed later (rate limits, 5xx, timeouts; not a refusal); `retry_after` is the
    backend's own Retry-After, in seconds, when it sent one."""

    def __init__(
        self,
        status: int,
        error_class: str,
        message: str,
        retryable: bool,
        *,
        transient: bool | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_class = error_class
        self.message = message
        self.retryable = retryable
        self.transient = status in (429, 502, 503, 504) if transient is None else transient
        self.retry_after = retry_after

    @property
    def backend_fault(self) -> bool:
        """Whether the backend, not the request, failed (timeouts, 5xx, 429, connection errors, refused credentials):
        what counts against it in the circuit breaker. A client's own 4xx never does."""
        return self.status >= 500 or self.status == 429


class MissingCredentials(Exception):
    pass


@dataclass
class StreamHandle:
    """An open upstream stream whose first chunk has already arrived (so a failure before it can fall back)."""

    first: dict[str, Any]
    rest: AsyncIterator[Any]
    model: str
    usage: Usage = Usage()
    secrets: frozenset[str] = frozenset()
    """The configured keys, redacted from what the backend says if the stream fails."""


class Forwarder:
    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        try:
            import litellm
        except ImportError as exc:  # pragma: no cover - a dependency of the package
            raise RuntimeError("litellm is missing: pip install 'litellm==1.106.2'") from exc
        litellm.suppress_debug_info = True
        litellm.telemetry = False
        # LiteLLM otherwise rebuilds every stream for its logging callbacks, ~15% of its CPU per streamed call
        # (docs/PERFORMANCE.md); the gateway registers no callbacks and records each stream itself.
        litellm.disable_streaming_logging = True
        # LiteLLM logs a line per call at INFO; the gateway records every call itself.
        for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "litellm"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self._litellm = litellm
        self._env = env if env is not None else os.environ
        self._secrets: frozenset[str] = frozenset()

    async def warm_up(self) -> None:
        """One mocked call of each kind, so the first real request does not pay LiteLLM's lazy set-up (~1 s)."""
        messages = [{"role": "user", "content": "warm-up"}]
        try:
            await self._litellm.acompletion(
                model="openai/warm-up", messages=messages, mock_response="ok", api_key=NO_KEY
            )
            stream = await self._litellm.acompletion(
                model="openai/warm-up", messages=messages, mock_response="ok", stream=True, api_key=NO_KEY
            )
            async for _ in stream:
                pass
        except Exception:  # noqa: BLE001 - warming up is an optimisation, never a reason not to start
            log.warning("LiteLLM warm-up failed; the first request will be slower", exc_info=True)

    # -- registry ---------------------------------------------------------------------------------------------

    def has_credentials(self, model: ModelEntry) -> bool:
        """Whether the model can be called: its key variable (if any) is set, and so is its address when only a
        variable gives it (`api_base_env` without an `api_base` to fall back on)."""
        params = model.litellm_params
        if params.api_base_env and not params.api_base and not self._env.get(params.api_base_env):
            return False
        return params.api_key_env is None or bool(self._env.get(params.api_key_env))

    def prepare(self, registry: Registry) -> Registry:
        """`registry` as served: prices resolved, and its keys' values known, to be redacted from backends' errors."""
        self._secrets = configured_secrets(registry, self._env)
        return self.resolve_prices(registry)

    def resolve_prices(self, registry: Registry) -> Registry:
        """Fill prices the registry leaves out from LiteLLM's price map (when it knows the model)."""
        return resolve_prices(registry, self._litellm.get_model_info)

    def cost(self, model: ModelEntry, usage: Usage) -> tuple[float | None, str | None]:
        """USD for one call: the provider's own figure when it reports one, else LiteLLM's cost function."""
        if usage.provider_cost is not None:
            return usage.provider_cost, "provider"
        if usage.prompt_tokens is None and usage.completion_tokens is None:
            return None, None
        custom = None
        if model.input_cost_per_mtok is not None and model.output_cost_per_mtok is not None:
            custom = {
                "input_cost_per_token": model.input_cost_per_mtok / 1e6,
                "output_cost_per_token": model.output_cost_per_mtok / 1e6,
            }
        try:
            prompt_cost, completion_cost = self._litellm.cost_per_token(
                model=model.litellm_params.model,
                prompt_tokens=usage.prompt_tokens or 0,
                completion_tokens=usage.completion_tokens or 0,
                custom_cost_per_token=custom,
            )
        except Exception:  # noqa: BLE001 - unmapped model and no registry price
            return None, None
        return float(prompt_cost + completion_cost), "litellm"

    # -- calls --------------------------------------------------------------------------------------------------

    def _kwargs(self, model: ModelEntry, request: ChatRequest, stream: bool) -> dict[str, Any]:
        params = model.litellm_params
        key = NO_KEY
        if params.api_key_env:
            key = self._env.get(params.api_key_env) or ""
            if not key:
                raise MissingCredentials(f"model {model.name!r} needs the environment variable {params.api_key_env}")
        kwargs: dict[str, Any] = dict(request.params)
        kwargs.update(
            model=params.model,
            messages=list(request.messages),
            api_key=key,
            timeout=params.timeout_s,
            num_retries=0,
            stream=stream,
            # LiteLLM routes requests with tools through its MCP bridge, which would let a request make the
            # gateway contact servers the registry does not name (and needs the optional `mcp` package).
            _skip_mcp_handler=True,
        )
        api_base = (self._env.get(params.api_base_env) if params.api_base_env else None) or params.api_base
        if api_base:
            kwargs["api_base"] = api_base
        if params.extra_headers_env:
            kwargs["extra_headers"] = {h: self._env.get(v, "") for h, v in params.extra_headers_env.items()}
        if stream:
            # Always ask for usage: tokens and cost are recorded even when the client did not ask to see them.
            kwargs["stream_options"] = {**dict(request.params.get("stream_options") or {}), "include_usage": True}
        return kwargs

    async def complete(self, model: ModelEntry, request: ChatRequest) -> tuple[dict[str, Any], Usage]:
        try:
            response = await self._litellm.acompletion(**self._kwargs(model, request, stream=False))
        except Exception as exc:  # noqa: BLE001 - every failure is classified, none escapes raw
            raise classify_error(exc, self._secrets) from exc
        raw = response.model_dump()
        return clean_response(raw, model.name), usage_of(raw.get("usage"))

    async def open_stream(self, model: ModelEntry, request: ChatRequest) -> StreamHandle:
        try:
            response = await self._litellm.acompletion(**self._kwargs(model, request, stream=True))
            iterator = response.__aiter__()
            first = await asyncio.wait_for(_first_answer_chunk(iterator), timeout=model.litellm_params.timeout_s)
        except StopAsyncIteration as exc:
            raise UpstreamError(502, "EmptyStream", "the backend's stream ended without an answer", True) from exc
        except TimeoutError as exc:
            raise UpstreamError(504, "Timeout", "the backend sent no first chunk in time", True) from exc
        except Exception as exc:  # noqa: BLE001
            raise classify_error(exc, self._secrets) from exc
        return StreamHandle(first, iterator, model.name, secrets=self._secrets)


async def _first_answer_chunk(iterator: AsyncIterator[Any]) -> dict[str, Any]:
    """The stream's first chunk with a delta in it. What comes before carries nothing for the client (keep-alives, a
    provider's filter results) or is LiteLLM's stand-in finish for a body that was no stream at all (an HTML page
    answered 200): when the stream ends without one (StopAsyncIteration), the backend gave no answer, and another
    backend may, since nothing has reached the client yet."""
    while True:
        chunk: dict[str, Any] = (await iterator.__anext__()).model_dump()
        if any(_clean_message(choice.get("delta") or {}) for choice in chunk.get("choices") or []):
            return chunk


def classify_error(exc: BaseException, secrets: frozenset[str] = frozenset()) -> UpstreamError:
    """Map a LiteLLM/OpenAI exception to a status and whether another backend is worth trying. The backend's own
    words are redacted (`secrets` and anything key-shaped) here, so no consumer of the error sees a key."""
    if isinstance(exc, UpstreamError):
        return exc
    # LiteLLM wraps a stream's failure after its first chunk (a read timeout, a dropped connection) for its router.
    original = getattr(exc, "original_exception", None)
    if type(exc).__name__ == "MidStreamFallbackError" and isinstance(original, BaseException):
        exc = original
    if isinstance(exc, MissingCredentials):
        return UpstreamError(503, "MissingCredentials", str(exc), True, transient=False)
    name = type(exc).__name__
    status = getattr(exc, "status_code", None)
    if not isinstance(status, int):
        status = 502
    if name in ("Timeout", "APITimeoutError") or isinstance(exc, asyncio.TimeoutError) or _timed_out(exc):
        return UpstreamError(504, "Timeout", "the backend timed out", True)
    if name == "APIConnectionError" or "Connection error" in str(exc):
        return UpstreamError(502, "APIConnectionError", "the connection to the backend failed", True)
    if name == "ContextWindowExceededError":
        return UpstreamError(400, name, "the prompt is longer than the backend's context window", True)
    if status == 429:
        return UpstreamError(429, name, "the backend is rate limited", True, retry_after=_retry_after(exc))
    if status >= 500:
        return UpstreamError(502, name, f"the backend failed with status {status}", True)
    if status in (401, 402, 403):
        # The backend refused our registry credentials or account: the client can do nothing, another backend may.
        return UpstreamError(
            502, name, f"the backend refused the gateway's credentials (status {status})", True, transient=False
        )
    if status == 404:
        return UpstreamError(502, name, "the backend does not know the configured model", True, transient=False)
    # Anything else in 4xx is about the request itself: another backend would refuse it too.
    return UpstreamError(status, name, _upstream_message(exc, secrets), False)


def _timed_out(exc: BaseException) -> bool:
    """Whether a read timeout is behind `exc` (LiteLLM reports one mid-stream as a connection error)."""
    cause = exc.__cause__ or exc.__context__
    for _ in range(5):
        if cause is None:
            return False
        if "Timeout" in type(cause).__name__:
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _retry_after(exc: BaseException) -> float | None:
    """The backend's Retry-After in seconds (LiteLLM keeps the response headers on its exceptions), if numeric."""
    headers = getattr(exc, "litellm_response_headers", None) or getattr(getattr(exc, "response", None), "headers", None)
    if not isinstance(headers, Mapping):
        return None
    value = next((v for k, v in headers.items() if str(k).lower() == "retry-after"), None)
    try:
        seconds = float(value)  # type: ignore[arg-type]  # None and HTTP dates fall to the except
    except (TypeError, ValueError):
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _upstream_message(exc: BaseException, secrets: frozenset[str]) -> str:
    message = getattr(exc, "message", None) or str(exc)
    # LiteLLM prefixes messages with its own class names; the client wants the backend's words only.
    for marker in ("Exception - ", "Error - "):
        if marker in message:
            message = message.split(marker, 1)[1]
    return redact(message, secrets)[:500]


def usage_of(raw: Any) -> Usage:
    if not isinstance(raw, dict):
        return Usage()
    cost = raw.get("cost")
    return Usage(
        raw.get("prompt_tokens"),
        raw.get("completion_tokens"),
        float(cost) if isinstance(cost, (int, float)) and not isinstance(cost, bool) else None,
    )


def _clean_message(message: dict[str, Any]) -> dict[str, Any]:
    return {k: message[k] for k in _MESSAGE_FIELDS if message.get(k) is not None}


def _clean_usage(usage: Any) -> dict[str, Any] | None:
    if not isinstance(usage, dict):
        return None
    return {k: v for k, v in usage.items() if v is not None and k != "cost"}


def clean_response(raw: dict[str, Any], model_name: str) -> dict[str, Any]:
    """OpenAI's chat.completion shape, named after the registry model, without LiteLLM's extra fields."""
    choices = []
    for choice in raw.get("choices") or []:
        message = _clean_message(choice.get("message") or {})
        if "content" not in message:
            message["content"] = None
        choices.append(
            {
                "index": choice.get("index", 0),
                "message": message,
                "finish_reason": choice.get("finish_reason"),
                "logprobs": choice.get("logprobs"),
            }
        )
    body = {
        "id": raw.get("id"),
        "object": "chat.completion",
        "created": raw.get("created"),
        "model": model_name,
        "choices": choices,
        "usage": _clean_usage(raw.get("usage")),
    }
    if raw.get("system_fingerprint"):
        body["system_fingerprint"] = raw["system_fingerprint"]
    return body


def clean_chunk(raw: dict[str, Any], model_name: str) -> tuple[dict[str, Any] | None, Usage | None]:
    """A chunk in OpenAI's shape (or None when it only carried usage), and the usage it carried."""
    usage = usage_of(raw.get("usage")) if raw.get("usage") else None
    choices = []
    for choice in raw.get("choices") or []:
        delta = _clean_message(choice.get("delta") or {})
        if not delta and choice.get("finish_reason") is None and usage is not None:
            continue  # LiteLLM's usage-only chunk carries an empty choice; OpenAI's has none
        choices.append(
            {
                "index": choice.get("index", 0),
                "delta": delta,
                "finish_reason": choice.get("finish_reason"),
                "logprobs": choice.get("logprobs"),
            }
        )
    if not choices and usage is not None:
        return None, usage
    chunk = {
        "id": raw.get("id"),
        "object": "chat.completion.chunk",
        "created": raw.get("created"),
        "model": model_name,
        "choices": choices,
    }
    if raw.get("system_fingerprint"):
        chunk["system_fingerprint"] = raw["system_fingerprint"]
    return chunk, usage


def usage_chunk(template: dict[str, Any], usage: Usage, raw_usage: dict[str, Any] | None) -> dict[str, Any]:
    """The final chunk OpenAI sends for `stream_options.include_usage`: no choices, only usage."""
    body = _clean_usage(raw_usage) or {
        "prompt_tokens": usage.prompt_tokens or 0,
        "completion_tokens": usage.completion_tokens or 0,
        "total_tokens": (usage.prompt_tokens or 0) + (usage.completion_tokens or 0),
    }
    return {
        **{k: template[k] for k in ("id", "object", "created", "model") if k in template},
        "choices": [],
        "usage": body,
    }
