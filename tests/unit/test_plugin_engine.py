"""The plugin's routing engine is rebuilt when its config or learned state changes, as the gateway's runtime is."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from router_plugins.classify import StaticEmbedder
from router_plugins.classify.static_embedding import TABLE_FILE
from router_plugins.datadir import DataDir
from router_plugins.outcomes import OutcomeSet
from router_plugins.plugin_engine import EngineHolder
from router_plugins.registry import load_registry
from router_plugins.routers import LearnedRouter, RouterContext
from router_plugins.types import ChatRequest

from .test_assembly import PROMPTS, _static_table

CONFIG = (Path(__file__).parent.parent / "fixtures" / "litellm_plugin" / "registry.yaml").read_text()
CODING = "Implement a regex in a code snippet that parses dates."


def _route(holder: EngineHolder, text: str = CODING) -> tuple[str, str]:
    engine = holder.engine
    request = ChatRequest("r1", "auto", ({"role": "user", "content": text},))
    decision = engine.route(request, engine.classify(text), "en").decision
    return decision.model, decision.router


def _touch_later(path: Path) -> None:
    """A new modification time even on a file system with coarse timestamps."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def test_a_config_edit_is_swapped_in_and_a_bad_one_keeps_the_last_good(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG + f"storage: {{data_dir: {tmp_path / 'data'}}}\n")
    holder = EngineHolder(config)
    assert _route(holder) == ("coder", "static-rules") and not holder.check(), "nothing changed"
    config.write_text(config.read_text().replace("{model: coder, priority: 1}, {model: mini, priority: 2}",
                                                 "{model: mini, priority: 1}"))  # fmt: skip
    _touch_later(config)
    assert holder.check() and _route(holder) == ("mini", "static-rules") and holder.swaps == 1
    config.write_text("models: [")
    _touch_later(config)
    assert not holder.check() and "ConfigError" in (holder.last_error or "")
    assert _route(holder) == ("mini", "static-rules"), "the last good config keeps routing"


def test_a_new_learned_router_version_is_swapped_in(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.replace("static_embedding: {enabled: false}", "static_embedding: {enabled: true}")
                      + f"storage: {{data_dir: {tmp_path / 'data'}}}\n")  # fmt: skip
    data = DataDir.resolve(config).ensure()
    _static_table(data)
    holder = EngineHolder(config)
    assert _route(holder)[1] == "static-rules", "no learned artifact yet: the chain's next router decides"
    texts = PROMPTS[:60]
    outcomes = OutcomeSet([str(i) for i in range(len(texts))], texts, ["chat"] * len(texts), [None] * len(texts),
                          ["coder", "mini"], np.random.default_rng(0).random((len(texts), 2)).round(),
                          np.tile([0.003, 0.0003], (len(texts), 1)))  # fmt: skip
    embed = StaticEmbedder.load(data.path(TABLE_FILE)).embed
    learned = LearnedRouter(load_registry(config), RouterContext(static_embed=embed))
    learned.fit(outcomes)
    learned.save(data.artifacts)
    assert holder.check()
    assert _route(holder)[1] == "learned" and holder.engine.chain[0].version == learned.version  # type: ignore[attr-defined]
