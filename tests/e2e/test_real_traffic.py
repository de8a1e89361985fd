"""Real-traffic classification through a real gateway: the shipped text model decides (keywords off), in any
language; tasks named by feedback stick for a prompt and its near duplicates; a new text model is swapped in
while serving."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import openai
import pytest

from router_plugins.classify.text_model import ARTIFACT_FILE
from router_plugins.classify.text_model_fit import fit_text_model
from router_plugins.registry import default_tasks

from .conftest import Gateway, Upstream, registry_text

pytestmark = pytest.mark.e2e

CORRECTIONS_TIMEOUT_S = 15.0
"""Feedback labels are reloaded every 5 s (proxy.gateway.REFIT_CHECK_S), then the runtime is rebuilt."""
PICKUP_TIMEOUT_S = 15.0
"""A new text-model file is swapped in at the next artifact check (every 2 s)."""


def text_model_registry(upstream: Upstream) -> str:
    """The e2e registry with only the text model classifying: no keyword rules, no static or transformer layers."""
    text = registry_text(upstream)
    anchor = "    transformer_knn: {enabled: false}\n"
    assert anchor in text, "tests/e2e/registry.yaml changed its classifier block"
    return text.replace(anchor, "    keywords: {enabled: false}\n    static_embedding: {enabled: false}\n" + anchor)


@pytest.fixture(scope="module")
def text_gateway(start_gateway: Callable[..., Gateway], upstream: Upstream) -> Gateway:
    return start_gateway(text_model_registry(upstream), with_table=False)


def ask(gateway: Gateway, prompt: str) -> tuple[dict[str, str], str]:
    """Route `prompt` with model="auto"; returns the autoroute headers and the model that answered."""
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused")
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=[{"role": "user", "content": prompt}])
    headers = {k.removeprefix("x-autoroute-"): v for k, v in raw.headers.items() if k.startswith("x-autoroute-")}
    return headers, raw.parse().model


def poll_task(gateway: Gateway, prompt: str, task: str, timeout: float) -> dict[str, str]:
    """Ask until `prompt` is classified as `task` or the time is up; returns the last headers."""
    deadline = time.monotonic() + timeout
    while True:
        headers, _ = ask(gateway, prompt)
        if headers["task"] == task or time.monotonic() > deadline:
            return headers
        time.sleep(0.5)


def mc(question: str, options: list[str]) -> str:
    letters = "ABCD"
    lines = [f"{letters[i]}) {option}" for i, option in enumerate(options)]
    return "Pick the right option and reply with its letter only.\n\n" + question + "\n" + "\n".join(lines)


NON_ENGLISH_CODING = [
    ("zh", "请帮我用 Python 写一个函数，输入一个整数列表，返回其中所有质数组成的新列表。"),
    ("ja", "Pythonで、文字列を受け取って各単語の出現回数を辞書で返す関数を書いてください。"),
]  # fmt: skip


@pytest.mark.parametrize(("language", "prompt"), NON_ENGLISH_CODING, ids=[lang for lang, _ in NON_ENGLISH_CODING])
def test_a_non_english_coding_request_goes_to_the_coding_model(text_gateway: Gateway, language: str, prompt: str) -> None:
    headers, model = ask(text_gateway, prompt)
    assert (headers["task"], headers["language"]) == ("coding", language)
    assert headers["model"] == model == "coder"
    (decision,) = text_gateway.wait_rows(
        "SELECT classification_layer FROM routing_decisions WHERE request_id = ?", (headers["request-id"],)
    )
    assert decision["classification_layer"] == "text_model"


MULTIPLE_CHOICE = [
    (mc("Which gas do plants mainly take in from the air to carry out photosynthesis?",
        ["Oxygen", "Nitrogen", "Carbon dioxide", "Helium"]), "knowledge"),
    (mc("Who was the first emperor of unified China?", ["Liu Bang", "Qin Shi Huang", "Kublai Khan", "Sun Yat-sen"]),
     "knowledge"),
    (mc("If 4y - 7 = 2y + 9, what is the value of y?", ["4", "6", "8", "16"]), "math"),
    (mc("What is the area of a circle whose radius is 5 cm?", ["10π cm²", "25π cm²", "5π cm²", "100π cm²"]), "math"),
]  # fmt: skip


@pytest.mark.parametrize(("prompt", "task"), MULTIPLE_CHOICE, ids=["biology", "history", "equation", "geometry"])
def test_a_multiple_choice_question_is_classified_by_its_subject(text_gateway: Gateway, prompt: str, task: str) -> None:
    headers, _ = ask(text_gateway, prompt)
    assert (headers["task"], headers["language"]) == (task, "en")


def test_only_a_request_to_translate_is_translation(text_gateway: Gateway) -> None:
    poem, _ = ask(text_gateway, "Напиши небольшое стихотворение о первом снеге и старом парке.")
    assert poem["language"] == "ru"
    assert poem["task"] != "translation"

    headers, model = ask(text_gateway, "Translate this into English: Morgen früh fahren wir mit dem Fahrrad zum See.")
    assert (headers["task"], headers["language"]) == ("translation", "en")
    assert model == "mini"


def test_a_task_named_by_feedback_sticks_for_the_prompt_and_its_near_duplicates(text_gateway: Gateway) -> None:
    prompt = ("My cat Felix is 7 years old and has started sleeping most of the day in the sun by the window; "
              "is that normal for a cat his age?")  # fmt: skip
    near_duplicate = prompt.replace("Felix", "Oscar").replace("7 years", "9 years")
    unrelated = "What is the boiling point of water at the top of Mount Everest?"
    before, _ = ask(text_gateway, prompt)
    corrected = "chat" if before["task"] != "chat" else "summarization"
    text_gateway.wait_rows("SELECT 1 FROM routing_decisions WHERE request_id = ?", (before["request-id"],))

    reply = httpx.post(f"{text_gateway.base_url}/feedback", json={"request_id": before["request-id"], "task": corrected})
    assert reply.status_code == 200, reply.text

    after = poll_task(text_gateway, prompt, corrected, CORRECTIONS_TIMEOUT_S)
    assert after["task"] == corrected, f"the correction did not stick within {CORRECTIONS_TIMEOUT_S} s"
    (decision,) = text_gateway.wait_rows(
        "SELECT classification_layer FROM routing_decisions WHERE request_id = ?", (after["request-id"],)
    )
    assert decision["classification_layer"] == "corrections"
    assert ask(text_gateway, near_duplicate)[0]["task"] == corrected
    other, _ = ask(text_gateway, unrelated)
    assert other["task"] != corrected
    (decision,) = text_gateway.wait_rows(
        "SELECT classification_layer FROM routing_decisions WHERE request_id = ?", (other["request-id"],)
    )
    assert decision["classification_layer"] == "text_model"


def test_a_new_text_model_is_swapped_in_while_serving(start_gateway: Callable[..., Gateway], upstream: Upstream) -> None:
    gateway = start_gateway(text_model_registry(upstream), with_table=False)
    zebra = "Tell me something about the zebra herd we saw grazing near the river."
    before, _ = ask(gateway, zebra)
    assert before["task"] != "math"

    # A decisive toy model: anything about zebras is maths, everything else is chat.
    animals = ["zebra", "zebras", "zebra herd", "a zebra foal", "zebra stripes"]
    zebra_texts = [f"{a} {s}" for a in animals for s in ("grazing", "by the river", "in the savanna", "running")]
    other_texts = [f"{t} {s}" for t in ("the weather", "my weekend", "a good book", "dinner plans", "the news")
                   for s in ("today", "please", "tell me", "again")]  # fmt: skip
    model = fit_text_model(zebra_texts + other_texts, ["math"] * len(zebra_texts) + ["chat"] * len(other_texts),
                           [t.name for t in default_tasks()])  # fmt: skip
    assert model.probabilities([zebra])[0][model.tasks.index("math")] > 0.5
    artifact = model.save(gateway.data_dir / "artifacts" / ARTIFACT_FILE)

    after = poll_task(gateway, zebra, "math", PICKUP_TIMEOUT_S)
    assert after["task"] == "math", f"the new text model was not picked up within {PICKUP_TIMEOUT_S} s"
    assert after["model"] == "mathematician"
    assert ask(gateway, "How was your weekend? Anything fun?")[0]["task"] == "chat"
    assert f"text model {artifact} loaded ({model.fingerprint})" in gateway.log.read_text()
