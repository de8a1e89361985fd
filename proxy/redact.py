"""Redaction: what a backend says about credentials never reaches a client, a log or the store.

Applied once, where a backend's failure becomes an `UpstreamError` (`proxy/forward.py`), so the error relayed to the
client, the `model_performance.error_message` row and every log line carry the redacted text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from router_plugins.registry import Registry

REDACTED = "[redacted]"
MIN_SECRET_CHARS = 4
"""A configured value shorter than this is not searched for: it would redact ordinary words."""
SCAN_CHARS = 8000
"""Only the start of a message is kept (and scanned): a backend's body can be arbitrarily long."""
_PATTERNS = (
    # Authorization header values, quoted or not, with or without a scheme: `Authorization: Bearer x`.
    re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?)(?:(?:bearer|basic|token)\s+)?[^\s'\",;}]+"),
    re.compile(r"(?i)\b((?:bearer|basic)\s+)[A-Za-z0-9._~+/=-]{4,}"),
    # Keys in query strings and key-value text: `?key=...`, `api_key=...`, `"x-api-key": "..."`.
    re.compile(r"(?i)([?&;](?:api[_-]?key|key|access[_-]?token|token|sig|signature)=)[^&\s'\"]+"),
    re.compile(r"(?i)(\b(?:x-)?api[_-]?key['\"]?\s*[:=]\s*['\"]?)[^\s'\",;&}]+"),
    # Provider key shapes: OpenAI/Anthropic `sk-...`, Google `AIza...`, GitHub, Slack.
    re.compile(r"\b(?:sk|pk|rk)-[A-Za-z0-9_-]{8,}"),
    re.compile(r"\b(?:AIza[0-9A-Za-z_-]{20,}|gh[pousr]_[0-9A-Za-z]{20,}|xox[abpr]-[0-9A-Za-z-]{10,})"),
    # Any other long token of letters and digits mixed (hex keys, JWT parts, base64 secrets).
    re.compile(r"\b(?=[A-Za-z0-9_-]{0,200}\d)(?=[A-Za-z0-9_-]{0,200}[A-Za-z])[A-Za-z0-9_-]{32,}"),
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` without credentials: every value in `secrets`, and anything shaped like a key or an auth header."""
    text = text[:SCAN_CHARS]
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= MIN_SECRET_CHARS:
            text = text.replace(secret, REDACTED)
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + REDACTED, text)
    return text


def configured_secrets(registry: Registry, env: Mapping[str, str]) -> frozenset[str]:
    """The values of every key variable the registry names: backends' keys and headers, and the client keys."""
    names = [*registry.auth.api_key_envs]
    for model in registry.models:
        params = model.litellm_params
        names += [params.api_key_env] if params.api_key_env else []
        names += list(params.extra_headers_env.values())
    return frozenset(value for name in names if (value := env.get(name)))
