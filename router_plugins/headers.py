"""The response headers that name a routing decision: the same for the gateway and the LiteLLM plugin."""

from __future__ import annotations


def decision_headers(
    request_id: str,
    model: str,
    task: str,
    language: str,
    router: str,
    preference: str,
    arm: str | None = None,
) -> dict[str, str]:
    """`model` is the registry model that answered (the router's choice when none did); `router` is `name@version`;
    `arm` the A/B arm, when there is a test."""
    arm_header = {"x-autoroute-arm": arm} if arm else {}
    return arm_header | {
        "x-autoroute-request-id": request_id,
        "x-autoroute-model": model,
        "x-autoroute-task": task,
        "x-autoroute-language": language,
        "x-autoroute-router": router,
        "x-autoroute-preference": preference,
    }


__all__ = ["decision_headers"]
