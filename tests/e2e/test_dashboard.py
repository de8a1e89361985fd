"""The web dashboard in a real browser: known traffic through a real gateway with client auth on (the `openai` client:
a fallback, a stream, a named model; feedback naming tasks), then `/dashboard` in headless Chromium. The numbers it
renders are the store's, a clicked decision opens its receipt, and the page's data calls need the key.

Needs Debian's `chromium` (`.ci/install-chromium`, run by `make test`) and `playwright` (the `test` extra), which drives
that browser: Playwright's own browser download is never used. Without the browser the tests skip, except under CI.

The screenshot in docs/ comes from `AUTOROUTE_DASHBOARD_SCREENSHOT=docs/dashboard.png pytest tests/e2e/test_dashboard.py
-k screenshot`: a gateway with an A/B test, mixed traffic over about three minutes, the page captured (and
`dashboard-receipt.png`, one receipt open).
"""

from __future__ import annotations

import math
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from .conftest import UPSTREAM_KEY, Gateway, Upstream, registry_text

KEY = "sk-dashboard-viewer-1"
CHROMIUM = os.environ.get("AUTOROUTE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOT = os.environ.get("AUTOROUTE_DASHBOARD_SCREENSHOT")
RENDER_TIMEOUT_MS = 15_000
CODING = "Write a Python function that merges two sorted lists."
CODING_STREAM = "Write a Python function that parses ISO dates"
DEBUGGING = "My script crashes with KeyError: 'id' when I run it"


def expect(locator: Any) -> Any:
    """Playwright's retrying assertions (its `wait_for_function` evaluates a string, which the page's CSP forbids)."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def _require_browser() -> str:
    try:
        import playwright.sync_api  # noqa: F401 - only checking it is there
    except ImportError:
        _missing("the playwright package (pip install -e '.[test]')")
    if not CHROMIUM:
        _missing("Chromium (apt-get install chromium, or set AUTOROUTE_CHROMIUM)")
    return str(CHROMIUM)


def _missing(what: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"the dashboard's browser test needs {what}; .ci/install-chromium should have installed it")
    pytest.skip(f"needs {what}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = _require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def guarded(start_gateway: Callable[..., Gateway], upstream: Upstream) -> Gateway:
    """A gateway of its own (the counts are exact) with client auth on."""
    text = registry_text(upstream).replace("storage:", "auth:\n  api_key_envs: [E2E_DASHBOARD_KEY]\n\nstorage:")
    return start_gateway(text, env={"E2E_UPSTREAM_KEY": UPSTREAM_KEY, "E2E_DASHBOARD_KEY": KEY})


def _chat(client: openai.OpenAI, prompt: str, model: str = "auto") -> tuple[str, str]:
    raw = client.chat.completions.with_raw_response.create(model=model, messages=[{"role": "user", "content": prompt}])
    return raw.headers["x-autoroute-request-id"], raw.headers["x-autoroute-model"]


def _feedback(gateway: Gateway, body: dict[str, Any], key: str | None = KEY) -> None:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    response = httpx.post(f"{gateway.base_url}/feedback", json=body, headers=headers, timeout=10)
    assert response.status_code == 200, response.text


@pytest.fixture(scope="module")
def traffic(guarded: Gateway) -> dict[str, str]:
    """Five requests (two coding, one streamed coding, one debugging that falls back, one naming `mini`) and two
    feedbacks naming a task (one agreeing with the classifier, one not), all written to the store."""
    client = openai.OpenAI(base_url=guarded.base_url, api_key=KEY, max_retries=0)
    sent = {"coding": _chat(client, CODING)[0]}
    _chat(client, CODING)
    with client.chat.completions.with_streaming_response.create(
        model="auto", messages=[{"role": "user", "content": CODING_STREAM}], stream=True
    ) as response:  # fmt: skip
        sent["stream"] = response.headers["x-autoroute-request-id"]
        assert response.read().decode().rstrip().endswith("data: [DONE]")
    sent["fallback"], served = _chat(client, DEBUGGING)
    assert served == "coder"
    sent["named"], served = _chat(client, "hello there", model="mini")
    assert served == "mini"
    _feedback(guarded, {"request_id": sent["fallback"], "score": 1.0, "task": "debugging"})
    _feedback(guarded, {"request_id": sent["coding"], "score": 0.5, "task": "testing"})
    guarded.wait_rows("SELECT 1 FROM routing_decisions", count=5)
    guarded.wait_rows("SELECT 1 FROM model_performance", count=6)
    guarded.wait_rows("SELECT 1 FROM feedback", count=2)
    return sent


def _open(browser: Any, gateway: Gateway, key: str | None) -> tuple[Any, Any, list[str], list[str]]:
    """A fresh context (its own sessionStorage) on /dashboard; with `key`, given through the page's key form. Returns
    the context, the page, every URL the page requested and the page's errors (script errors, console errors)."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    urls: list[str] = []
    errors: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    page.on("pageerror", lambda error: errors.append(str(error)))
    # Console errors include CSP violations; the refusals the tests provoke (401, 400) are expected.
    expected = re.compile(r"status of 40[01]")
    page.on("console", lambda m: m.type == "error" and not expected.search(m.text) and errors.append(m.text))
    page.goto(f"{gateway.url}/dashboard")
    if key is not None:
        page.wait_for_selector("#key-form:not([hidden])", timeout=RENDER_TIMEOUT_MS)
        page.fill("#key-input", key)
        page.click("#key-submit")
    return context, page, urls, errors


def _text(page: Any, selector: str) -> str:
    return str(page.locator(selector).inner_text()).strip()


def _value(page: Any, selector: str) -> str:
    return str(page.locator(selector).get_attribute("data-value"))


def test_the_page_is_static_and_its_data_needs_the_key(guarded: Gateway, browser: Any) -> None:
    page_response = httpx.get(f"{guarded.url}/dashboard")
    assert page_response.status_code == 200 and page_response.headers["content-type"].startswith("text/html")
    assert "connect-src 'self'" in page_response.headers["content-security-policy"]
    assert httpx.get(f"{guarded.url}/dashboard/dashboard.js").status_code == 200
    assert httpx.get(f"{guarded.url}/dashboard/secrets.txt").status_code == 404
    assert httpx.get(f"{guarded.url}/v1/dashboard/data").status_code == 401

    context, page, urls, errors = _open(browser, guarded, key=None)
    try:
        page.wait_for_selector("#status[data-state='unauthorized']", timeout=RENDER_TIMEOUT_MS)
        assert page.locator("#key-form").is_visible()
        assert page.locator("#total-requests").count() == 0, "no data without the key"
        status = "path => fetch(path, {headers: AUTH}).then(r => r.status)"
        assert page.evaluate(status.replace("AUTH", "{}"), "/v1/dashboard/data") == 401
        assert page.evaluate(status.replace("AUTH", "{}"), "/v1/decisions/ar-anything") == 401

        page.fill("#key-input", "sk-wrong")
        page.click("#key-submit")
        expect(page.locator("#key-reason")).to_contain_text("refused", timeout=RENDER_TIMEOUT_MS)
        assert page.locator("#total-requests").count() == 0

        page.fill("#key-input", KEY)
        page.click("#key-submit")
        page.wait_for_selector("#status[data-state='ok']", timeout=RENDER_TIMEOUT_MS)
        assert page.locator("#key-form").is_hidden() and page.locator("#total-requests").count() == 1
        with_key = f"path => fetch(path, {{headers: {{authorization: 'Bearer {KEY}'}}}}).then(r => r.status)"
        assert page.evaluate(with_key, "/v1/dashboard/data?window=15m") == 200
        assert page.evaluate(with_key, "/v1/dashboard/data?window=nonsense") == 400
        assert all(url.startswith(guarded.url) for url in urls), "the page loads nothing from elsewhere"
        assert KEY not in " ".join(urls), "the key never goes into a URL"
        assert not errors
    finally:
        context.close()


def test_the_dashboard_shows_what_the_store_holds(guarded: Gateway, traffic: dict[str, str], browser: Any) -> None:
    context, page, urls, errors = _open(browser, guarded, key=KEY)
    try:
        page.wait_for_selector("#recent-table", timeout=RENDER_TIMEOUT_MS)
        decisions = guarded.rows("SELECT request_id, selected_model, routed_model, task, classification_layer "
                                 "FROM routing_decisions")  # fmt: skip
        attempts = guarded.rows("SELECT p.model, p.outcome, p.cost_usd, p.latency_ms, d.task FROM model_performance p "
                                "JOIN routing_decisions d ON d.request_id = p.request_id")  # fmt: skip
        assert len(decisions) == 5 and len(attempts) == 6

        # Totals and spend.
        assert _text(page, "#total-requests .value") == "5" and _value(page, "#total-requests .value") == "5"
        assert _text(page, "#total-fallbacks .value") == "1"
        spend = math.fsum(a["cost_usd"] for a in attempts if a["cost_usd"] is not None)
        assert spend > 0 and float(_value(page, "#total-spend .value")) == pytest.approx(spend, rel=1e-9)
        assert _text(page, "#total-spend .value").startswith("$")
        assert float(str(page.locator("#traffic-total").get_attribute("data-requests"))) == 5

        # Per model: requests served and spend.
        served: dict[str, int] = {}
        for d in decisions:
            served[d["selected_model"]] = served.get(d["selected_model"], 0) + 1
        assert served == {"coder": 4, "mini": 1}
        rendered = page.locator("#models-table tbody tr")
        assert rendered.count() == len({a["model"] for a in attempts})
        for model, count in served.items():
            row = f"#models-table tr[data-model='{model}']"
            assert _text(page, f"{row} td[data-field='requests']") == str(count)
            cost = math.fsum(a["cost_usd"] or 0.0 for a in attempts if a["model"] == model)
            assert float(_value(page, f"{row} td[data-field='spend']")) == pytest.approx(cost, rel=1e-9)
        bars = page.locator("#traffic rect[data-model='coder']")
        assert sum(int(str(bars.nth(i).get_attribute("data-requests"))) for i in range(bars.count())) == 4

        # Heatmap: every rendered cell is the store's task x model attempt success, and there is one per pair.
        expected: dict[tuple[str, str], list[int]] = {}
        for a in attempts:
            pair = expected.setdefault((a["task"], a["model"]), [0, 0])
            pair[0] += a["outcome"] == "success"
            pair[1] += 1
        cells = page.locator("#heatmap-table td.cell")
        found = {}
        for i in range(cells.count()):
            c = cells.nth(i)
            found[c.get_attribute("data-task"), c.get_attribute("data-model")] = [
                int(float(str(c.get_attribute("data-successes")))), int(str(c.get_attribute("data-n")))]  # fmt: skip
        assert found == expected
        assert expected["debugging", "broken-debugger"] == [0, 1] and expected["coding", "coder"] == [3, 3]
        assert _text(page, "#heatmap-table td[data-task='coding'][data-model='coder'] .count") == "3/3"
        assert "–" in _text(page, "#heatmap-table td[data-task='coding'][data-model='coder'] .ci"), "the interval"

        # Layer mix, latency, the confusion matrix from the two task labels.
        layers: dict[str, int] = {}
        for d in decisions:
            layers[d["classification_layer"]] = layers.get(d["classification_layer"], 0) + 1
        for layer, count in layers.items():
            assert _text(page, f"#layers-table tr[data-layer='{layer}'] td[data-field='decided']") == str(count)
        successes = sum(a["outcome"] == "success" for a in attempts if a["model"] == "coder")
        assert _text(page, "#latency-table tr[data-model='coder'] td[data-field='n']") == str(successes)
        assert page.locator("#confusion-accuracy").get_attribute("data-n") == "2"
        assert page.locator("#confusion-table td[data-right='debugging'][data-classified='debugging']").get_attribute(
            "data-count") == "1"  # fmt: skip
        assert page.locator("#confusion-table td[data-right='testing'][data-classified='coding']").get_attribute(
            "data-count") == "1"  # fmt: skip
        assert "No decision in this window had an A/B arm" in _text(page, "#ab")
        assert "No promotion" in _text(page, "#learning")

        # Recent decisions: one row per stored decision; the fallback's row opens its receipt.
        rows = page.locator("#recent-table tbody tr[data-request-id]")
        assert rows.count() == len(decisions)
        assert {rows.nth(i).get_attribute("data-request-id") for i in range(rows.count())} == {
            d["request_id"] for d in decisions}  # fmt: skip
        (fallback,) = [d for d in decisions if d["request_id"] == traffic["fallback"]]
        page.click(f"#recent-table tr[data-request-id='{traffic['fallback']}']")
        page.wait_for_selector("#receipt-selected-model", timeout=RENDER_TIMEOUT_MS)
        assert _text(page, "#receipt-request-id") == traffic["fallback"]
        assert _text(page, "#receipt-selected-model") == fallback["selected_model"] == "coder"
        assert _text(page, "#receipt-routed-model") == fallback["routed_model"] == "broken-debugger"
        tried = page.locator("#receipt-attempts tbody tr")
        assert [(tried.nth(i).get_attribute("data-model"), tried.nth(i).get_attribute("data-outcome"))
                for i in range(tried.count())] == [("broken-debugger", "failure"), ("coder", "success")]  # fmt: skip
        assert page.locator("#receipt-feedback tbody tr").count() == 1

        # Live: new traffic appears on the next refresh, without reloading the page.
        _chat(openai.OpenAI(base_url=guarded.base_url, api_key=KEY, max_retries=0), CODING)
        expect(page.locator("#total-requests .value")).to_have_text("6", timeout=RENDER_TIMEOUT_MS)
        assert all(url.startswith(guarded.url) for url in urls) and not errors
    finally:
        context.close()


SCREENSHOT_LEARNING = """
learning:
  chain: [winrate, static-rules]
  aggregate_interval_s: 2
  winrate: {exploration: 0.2, half_life_events: 50}
  ab: {mode: split, treatment_share: 0.5}
"""
SCREENSHOT_PROMPTS = [
    ("Write a Python function that merges two sorted lists.", "coding", 0.9),
    ("Fix this bug: my loop never ends when the list is empty", "debugging", 0.8),
    ("Solve for x: 3x + 7 = 22", "math", 1.0),
    ("hello! how are you today?", "chat", 0.7),
    ("Summarize this paragraph in one sentence: the meeting moved to Tuesday.", "summarization", 0.6),
    ("Translate 'good night' into French.", "translation", 0.9),
    ("Write a short poem about autumn rain", "writing", 0.4),
    ("Plan a three-day trip to Lisbon", "planning", 0.5),
    ("Write the README section that documents the install steps", "documentation", 0.7),
]


@pytest.mark.skipif(not SCREENSHOT, reason="docs only: set AUTOROUTE_DASHBOARD_SCREENSHOT=docs/dashboard.png")
def test_dashboard_screenshot(start_gateway: Callable[..., Gateway], upstream: Upstream, browser: Any) -> None:
    gateway = start_gateway(registry_text(upstream) + SCREENSHOT_LEARNING, env={"E2E_UPSTREAM_KEY": UPSTREAM_KEY})
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)
    for round_ in range(4):
        for i, (prompt, task, score) in enumerate(SCREENSHOT_PROMPTS):
            for n in range(1 + (i + round_) % 3):
                try:
                    request_id, _ = _chat(client, f"{prompt} ({round_}.{n})")
                except openai.APIError:
                    continue
                label = "coding" if task == "debugging" and n == 1 else task  # a few labels disagree
                _feedback(gateway, {"request_id": request_id, "score": score if n else 1.0 - score / 2, "task": label},
                          key=None)  # fmt: skip
        if round_ < 3:
            time.sleep(60)
    context, page, _, _ = _open(browser, gateway, key=None)
    try:
        page.select_option("#window", "15m")
        page.wait_for_selector("#recent-table", timeout=RENDER_TIMEOUT_MS)
        page.wait_for_timeout(1000)  # the 15-minute window's answer
        path = Path(str(SCREENSHOT))
        path.parent.mkdir(parents=True, exist_ok=True)
        cut = page.locator("#recent-table tbody tr").nth(11).bounding_box()  # the top of the table is enough
        page.screenshot(path=str(path), full_page=True, clip={"x": 0, "y": 0, "width": 1400, "height": cut["y"]})
        page.click("#recent-table tbody tr[data-status='success']")
        page.wait_for_selector("#receipt-selected-model", timeout=RENDER_TIMEOUT_MS)
        page.screenshot(path=str(path.with_name(path.stem + "-receipt" + path.suffix)))
    finally:
        context.close()
