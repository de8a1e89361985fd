"""The replay data set index and the replay upstream, in-process through httpx's ASGI transport."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from proxy.replay.dataset import Outcome, Record, ReplaySet, read_model_names, read_records
from proxy.replay.upstream import RECORD_HEADER, create_app, placeholder

T = TypeVar("T")
FIXTURE = Path(__file__).parent.parent / "fixtures" / "replay" / "mini.jsonl"
FIB_PROMPT = "Write a Python function that returns the n-th Fibonacci number iteratively."
FIB_CODE = "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a"
LRU_PROMPT = "Write a Python class implementing an LRU cache with get and put in O(1)."


def record(rid: str, prompt: str, outcomes: dict[str, dict[str, Any]], task: str | None = "coding") -> Record:
    return Record(rid, ({"role": "user", "content": prompt},), task, outcomes)


def outcome(quality: float, cost: float | None = None, response: str | None = None) -> dict[str, Any]:
    return {"quality": quality, "cost_usd": cost, "cost_estimated": False, "response": response}


@pytest.fixture(scope="module")
def mini() -> ReplaySet:
    return ReplaySet.load(FIXTURE)


def run(replay: ReplaySet, scenario: Callable[[httpx.AsyncClient], Awaitable[T]]) -> T:
    async def main() -> T:
        transport = httpx.ASGITransport(app=create_app(replay))
        async with httpx.AsyncClient(transport=transport, base_url="http://replay") as client:
            return await scenario(client)

    return asyncio.run(main())


def chat(replay: ReplaySet, model: str, messages: list[dict[str, Any]] | str, **params: Any) -> httpx.Response:
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    body = {"model": model, "messages": messages, **params}
    return run(replay, lambda c: c.post("/v1/chat/completions", json=body))


def sse_chunks(raw: str) -> tuple[list[dict[str, Any]], bool]:
    blocks = raw.split("\n\n")
    assert blocks[-1] == ""
    payloads = [b.removeprefix("data: ") for b in blocks[:-1]]
    assert all(b.startswith("data: ") for b in blocks[:-1])
    done = payloads[-1] == "[DONE]"
    return [json.loads(p) for p in payloads[: -1 if done else None]], done


# --- the data set --------------------------------------------------------------------------------


def test_fixture_loads_in_file_order_with_models_from_models_json(mini: ReplaySet) -> None:
    records = read_records(FIXTURE)
    assert len(records) == mini.records == 30 and mini.duplicates == 0
    assert [r.id for r in records[:4]] == ["code-01", "math-01", "write-01", "code-02"]
    assert mini.models == ("big-generalist", "acme/coder-7b", "tiny-chat")
    assert {r.task for r in records} == {"coding", "math", "writing"}
    assert [r.id for r in read_records(FIXTURE, limit=5)] == [r.id for r in records[:5]]


def test_lookup_is_by_the_last_user_message(mini: ReplaySet) -> None:
    found = mini.find([{"role": "user", "content": FIB_PROMPT}])
    assert found is not None and found.id == "code-01"
    conversation = [
        {"role": "system", "content": "You are a careful engineer."},
        {"role": "user", "content": "Solve for x: 3x + 7 = 22."},
        {"role": "assistant", "content": "x = 5"},
        {"role": "user", "content": [{"type": "text", "text": FIB_PROMPT}]},
    ]
    found = mini.find(conversation)
    assert found is not None and found.id == "code-01"
    assert mini.find([{"role": "user", "content": FIB_PROMPT + " "}]) is None
    assert mini.find([{"role": "user", "content": "never recorded"}]) is None


def test_outcome_is_typed_and_missing_models_are_none(mini: ReplaySet) -> None:
    found = mini.find([{"role": "user", "content": FIB_PROMPT}])
    assert found is not None
    assert found.outcome("acme/coder-7b") == Outcome(1.0, 4.45e-05, FIB_CODE, False)
    assert found.outcome("gpt-4") is None


def test_duplicate_prompts_are_answered_from_the_first_record() -> None:
    records = [record("a", "same", {"m": outcome(1.0)}), record("b", "same", {"m": outcome(0.0)})]
    replay = ReplaySet("dups", records, ["m"])
    assert replay.duplicates == 1 and replay.records == 2
    found = replay.find([{"role": "user", "content": "same"}])
    assert found is not None and found.id == "a"


def test_models_fall_back_to_the_first_records_outcomes(tmp_path: Path) -> None:
    data = tmp_path / "set.jsonl"
    outcomes = {"x/y": outcome(1.0), "z": outcome(0.5)}
    line = {"id": "1", "messages": [{"role": "user", "content": "q"}], "outcomes": outcomes}
    data.write_text(json.dumps(line) + "\n\n")
    records = read_records(data)
    assert read_model_names(data, records) == ("x/y", "z")
    assert ReplaySet.load(data).models == ("x/y", "z")


def test_bad_files_name_the_line(tmp_path: Path) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "q"}], "outcomes": {}}) + "\n{oops\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not JSON"):
        read_records(data)
    data.write_text(json.dumps({"messages": [], "outcomes": {}}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:1: a record needs"):
        read_records(data)
    with pytest.raises(FileNotFoundError, match="cannot read outcome file"):
        read_records(tmp_path / "missing.jsonl")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ValueError, match="holds no records"):
        ReplaySet.load(tmp_path / "empty.jsonl")


# --- answers -------------------------------------------------------------------------------------


def test_recorded_response_with_deterministic_usage_and_recorded_cost(mini: ReplaySet) -> None:
    response = chat(mini, "acme/coder-7b", FIB_PROMPT)
    assert response.status_code == 200
    assert response.headers[RECORD_HEADER] == "code-01"
    payload = response.json()
    assert payload["object"] == "chat.completion" and payload["model"] == "acme/coder-7b"
    assert payload["id"].startswith("chatcmpl-replay-") and payload["system_fingerprint"] == "replay"
    assert payload["choices"] == [
        {"index": 0, "message": {"role": "assistant", "content": FIB_CODE}, "finish_reason": "stop", "logprobs": None}
    ]
    prompt_tokens = math.ceil(len(FIB_PROMPT) / 4) + 4
    completion_tokens = math.ceil(len(FIB_CODE) / 4)
    assert payload["usage"] == {
        "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens, "cost": 4.45e-05,
    }  # fmt: skip


def test_every_message_counts_toward_prompt_tokens(mini: ReplaySet) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": FIB_PROMPT}]
    usage = chat(mini, "big-generalist", messages).json()["usage"]
    assert usage["prompt_tokens"] == (math.ceil(9 / 4) + 4) + (math.ceil(len(FIB_PROMPT) / 4) + 4)


def test_placeholder_when_the_set_has_no_response(mini: ReplaySet) -> None:
    payload = chat(mini, "tiny-chat", LRU_PROMPT).json()
    content = payload["choices"][0]["message"]["content"]
    assert content == "[replay placeholder: tiny-chat has no recorded response; recorded quality 0.0]"
    assert payload["usage"]["completion_tokens"] == math.ceil(len(content) / 4)
    assert payload["usage"]["cost"] == 1.5e-05
    assert placeholder("m", Outcome(0.75, None, None)) == (
        "[replay placeholder: m has no recorded response; recorded quality 0.75]"
    )


def test_no_usage_cost_when_the_set_records_none() -> None:
    replay = ReplaySet("q", [record("1", "question", {"m": outcome(0.5, None, "answer")})], ["m"])
    usage = chat(replay, "m", "question").json()["usage"]
    assert usage == {"prompt_tokens": 6, "completion_tokens": 2, "total_tokens": 8}


def test_unknown_model_is_a_404_that_names_it(mini: ReplaySet) -> None:
    for model in ("gpt-4o", "openai/acme/coder-7b", "coder-7b"):
        response = chat(mini, model, FIB_PROMPT)
        assert response.status_code == 404
        error = response.json()["error"]
        assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", "model", "model_not_found")
        assert f"'{model}'" in error["message"] and "acme/coder-7b" in error["message"]


def test_unknown_prompt_is_a_404_that_quotes_it(mini: ReplaySet) -> None:
    response = chat(mini, "tiny-chat", "What is the capital of Australia?")
    assert response.status_code == 404
    error = response.json()["error"]
    assert (error["param"], error["code"]) == ("messages", "prompt_not_found")
    assert "Unknown prompt" in error["message"] and "What is the capital of Australia?" in error["message"]


def test_record_without_the_models_outcome_is_a_404() -> None:
    replay = ReplaySet("partial", [record("r1", "q", {"a": outcome(1.0)})], ["a", "b"])
    response = chat(replay, "b", "q")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "outcome_not_found"
    assert "r1" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("content", "param"),
    [
        (b"not json", None),
        (b"[1]", None),
        (json.dumps({"messages": [{"role": "user", "content": "q"}]}).encode(), "model"),
        (json.dumps({"model": "m", "messages": []}).encode(), "messages"),
        (json.dumps({"model": "m", "messages": ["q"]}).encode(), "messages"),
    ],
)
def test_malformed_requests_are_400(mini: ReplaySet, content: bytes, param: str | None) -> None:
    response = run(mini, lambda c: c.post("/v1/chat/completions", content=content))
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


# --- streaming -----------------------------------------------------------------------------------


def test_streaming_frames_carry_the_response_and_the_cost(mini: ReplaySet) -> None:
    response = chat(mini, "acme/coder-7b", FIB_PROMPT, stream=True, stream_options={"include_usage": True})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers[RECORD_HEADER] == "code-01"
    chunks, done = sse_chunks(response.text)
    assert done
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "acme/coder-7b" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    content_chunks = [c for c in chunks[1:] if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert 2 <= len(content_chunks) <= 5
    assert "".join(c["choices"][0]["delta"]["content"] for c in content_chunks) == FIB_CODE
    assert chunks[-2]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "stop", "logprobs": None}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["cost"] == 4.45e-05
    assert all(c["usage"] is None for c in chunks[:-1])
    plain = chat(mini, "acme/coder-7b", FIB_PROMPT).json()
    assert chunks[-1]["usage"] == plain["usage"]


def test_streaming_without_include_usage_has_no_usage(mini: ReplaySet) -> None:
    chunks, done = sse_chunks(chat(mini, "tiny-chat", LRU_PROMPT, stream=True).text)
    assert done and all("usage" not in c and c["choices"] for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text.startswith("[replay placeholder: tiny-chat")


def test_streaming_errors_are_plain_http_errors(mini: ReplaySet) -> None:
    response = chat(mini, "nobody", FIB_PROMPT, stream=True)
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"


# --- other endpoints -----------------------------------------------------------------------------


def test_models_and_health(mini: ReplaySet) -> None:
    models = run(mini, lambda c: c.get("/v1/models")).json()
    assert models["object"] == "list"
    assert [m["id"] for m in models["data"]] == ["big-generalist", "acme/coder-7b", "tiny-chat"]
    assert all(m["object"] == "model" and m["owned_by"] == "replay" for m in models["data"])
    health = run(mini, lambda c: c.get("/health")).json()
    assert health == {"status": "ok", "set": str(FIXTURE), "records": 30, "models": 3}


def test_serve_loads_once_and_runs_uvicorn(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.append({"app": app, **kwargs}))
    from proxy.replay import upstream

    upstream.serve(FIXTURE, port=4999)
    [call] = calls
    assert (call["host"], call["port"]) == ("127.0.0.1", 4999)
    assert call["app"].state.replay.records == 30
