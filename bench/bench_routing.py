"""Latency and throughput of the routing brain: the embedding server (real MiniLM), the cascade, the routing decision.

    .venv/bin/python bench/bench_routing.py --json docs/perf/routing.json

(a) one short prompt at a time through the EmbeddingServer (and, for reference, straight into the model and from the
    server's cache); (b) texts/s with many concurrent callers, which is what micro-batching is for; (c) classify() of the
    cascade's cheap layers (keywords, static embedding) on real prompts; (d) the whole routing decision as the gateway
    takes it for `model="auto"` (the language, classify, then `RoutingEngine.route` over the registry of --config;
    the engine built by the gateway's assembly): with the default cascade and no learned artifact (static rules
    decide), with a fitted learned router, and with the transformer layers forced (MiniLM embedding, then layers 3-4).
    Every part is bounded in calls and in seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PROMPTS = Path("real-test")
"""`real-test`: the real-traffic test split (bench/real_prompts.py), 906 prompts in 31 languages; else a JSONL file."""
FALLBACK_PROMPTS = [
    "Write a Python function that reverses a string.",
    "What is the capital of Australia?",
    "Solve 3x + 5 = 20 for x.",
    "Translate 'good morning' into French.",
    "Summarize the plot of Hamlet in two sentences.",
    "Why does my for loop never end?",
    "Plan a three-day trip to Kyoto on a small budget.",
    "Explain the difference between TCP and UDP.",
]


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=REPO / "config.yaml")
    parser.add_argument("--data-dir", type=Path, help="holds artifacts/static-embedding-*.npz (default: found)")
    parser.add_argument("--prompts", type=Path, default=DEFAULT_PROMPTS, help="a JSONL file with a `text` field")
    parser.add_argument("--calls", type=int, default=200, help="sequential single-text embeds")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of the throughput run")
    parser.add_argument("--classify", type=int, default=500, help="prompts for classify()")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=2.0)
    parser.add_argument("--budget", type=float, default=30.0, help="seconds at most for each sequential part")
    parser.add_argument("--decisions", type=int, default=2000, help="prompts for the routing decision")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()

    all_prompts = load_prompts(args.prompts)
    short = [p for p in all_prompts if len(p) <= 200] or FALLBACK_PROMPTS
    results: dict[str, Any] = {"settings": {k: str(v) for k, v in vars(args).items()}}
    results.update(asyncio.run(bench_embedding(args, short)))
    results["environment"] = environment()  # after the server has started: it sets OMP_WAIT_POLICY before torch loads
    results["classify"] = bench_classify(args, all_prompts)
    results["decision"] = bench_decision(args, all_prompts)
    print(table(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
        print(f"wrote {args.json}")


def load_prompts(path: Path) -> list[str]:
    if str(path) == "real-test":
        import sys

        sys.path.insert(0, str(REPO))
        from bench.real_prompts import load

        texts = [r["text"] for r in load("test")]
        random.Random(0).shuffle(texts)
        return texts
    if not path.exists():
        print(f"{path} not found: using {len(FALLBACK_PROMPTS)} built-in prompts")
        return list(FALLBACK_PROMPTS)
    with path.open(encoding="utf-8") as lines:  # not splitlines(): it also splits at U+2028 inside JSON strings
        texts = [json.loads(line)["text"] for line in lines if line.strip()]
    random.Random(0).shuffle(texts)  # the file is grouped by source; a fixed shuffle mixes tasks and lengths
    return texts


def unique(prompts: list[str]) -> Callable[[int], str]:
    """The i-th prompt, made distinct once the list wraps around, so no run is helped by a cache."""
    return lambda i: prompts[i % len(prompts)] + ("" if i < len(prompts) else f" ({i // len(prompts)})")


def summary(latencies_s: list[float], elapsed_s: float | None = None) -> dict[str, float]:
    ms = np.asarray(latencies_s) * 1000
    out = {"n": len(ms), "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
           "mean_ms": float(ms.mean())}  # fmt: skip
    if elapsed_s:
        out["per_s"] = len(ms) / elapsed_s
    return out


async def bench_embedding(args: argparse.Namespace, prompts: list[str]) -> dict[str, Any]:
    from router_plugins.embeddings import TransformerEmbedder
    from router_plugins.serving import EmbeddingServer

    loaded: list[TransformerEmbedder] = []

    def load() -> TransformerEmbedder:
        loaded.append(TransformerEmbedder())
        return loaded[0]

    # cache_size=0: these parts measure the model, not the cache.
    server = EmbeddingServer(load, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, cache_size=0)
    started = time.perf_counter()
    await server.start()
    embedder, text = loaded[0], unique(prompts)
    out: dict[str, Any] = {"model_load_s": time.perf_counter() - started, "device": server.device}
    for i in range(5):  # warm-up: first calls pay for allocations and kernel choices
        await server.embed([f"warm up {i}"])
    latencies, deadline = [], time.perf_counter() + args.budget
    for i in range(args.calls):
        t0 = time.perf_counter()
        await server.embed([text(i)])
        latencies.append(time.perf_counter() - t0)
        if time.perf_counter() > deadline:
            break
    out["embed_sequential"] = summary(latencies)

    # The same texts straight into the model, on this thread: what the server's queue and thread hop cost.
    latencies, deadline = [], time.perf_counter() + args.budget
    for i in range(args.calls):
        t0 = time.perf_counter()
        embedder.embed([text(i)])
        latencies.append(time.perf_counter() - t0)
        if time.perf_counter() > deadline:
            break
    out["embed_direct"] = summary(latencies)

    before = server.stats
    latencies, counter = [], iter(range(args.calls, 10**9))
    stop_at = time.perf_counter() + args.seconds

    async def caller() -> None:
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            await server.embed([text(next(counter))])
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(args.concurrency)))
    elapsed = time.perf_counter() - t0
    after = server.stats
    batches = after.batches - before.batches
    out["embed_concurrent"] = {
        **summary(latencies, elapsed),
        "concurrency": args.concurrency,
        "seconds": elapsed,
        "batches": batches,
        "mean_batch": (after.texts - before.texts) / batches if batches else 0.0,
        "max_queue": after.max_queue,
    }
    await server.close()

    cached = EmbeddingServer(lambda: embedder)
    await cached.embed([prompts[0]])
    latencies = []
    for _ in range(args.calls):
        t0 = time.perf_counter()
        await cached.embed([prompts[0]])
        latencies.append(time.perf_counter() - t0)
    out["embed_cache_hit"] = summary(latencies)
    await cached.close()
    return out


def bench_classify(args: argparse.Namespace, prompts: list[str]) -> dict[str, Any]:
    from router_plugins.assembly import Parts, served_classifier
    from router_plugins.classify import StaticEmbedder
    from router_plugins.classify.assembly import ClassifierSources
    from router_plugins.classify.static_embedding import TABLE_FILE
    from router_plugins.datadir import DataDir
    from router_plugins.registry import load_registry

    data_dir = args.data_dir or next(
        (d for d in (REPO / "autoroute-data", REPO / ".pytest_cache" / "autoroute-data")
         if DataDir(d).path(TABLE_FILE).exists()),
        REPO / "autoroute-data",
    )  # fmt: skip
    # As served on a CPU: the text model (the data dir's or the shipped one), no transformer layers.
    artifacts = DataDir(data_dir).artifacts
    parts = Parts(StaticEmbedder.load_or_build(data_dir), ClassifierSources(artifacts).text_model())
    classifier = served_classifier(load_registry(args.config), artifacts, parts)
    sample = prompts[: args.classify]
    for p in sample[:20]:
        classifier.classify(p)
    latencies, layers, static_ms = [], {}, []
    deadline = time.perf_counter() + args.budget
    for p in sample:
        t0 = time.perf_counter()
        result = classifier.classify(p)
        latencies.append(time.perf_counter() - t0)
        layers[result.layer] = layers.get(result.layer, 0) + 1
        static_ms += [a.latency_ms for a in result.attempts if a.layer == "static_embedding"]
        if time.perf_counter() > deadline:
            break
    out: dict[str, Any] = {**summary(latencies), "layers": layers, "data_dir": str(data_dir)}
    out["mean_chars"] = float(np.mean([len(p) for p in sample[: len(latencies)]]))
    if static_ms:
        out["static_layer_p50_ms"] = float(np.percentile(static_ms, 50))
        out["static_layer_p99_ms"] = float(np.percentile(static_ms, 99))
    return out


def _data_dir(args: argparse.Namespace) -> Path:
    from router_plugins.classify.static_embedding import TABLE_FILE
    from router_plugins.datadir import DataDir

    candidates = (REPO / "autoroute-data-bench", REPO / "autoroute-data", REPO / ".pytest_cache" / "autoroute-data")
    return args.data_dir or next((d for d in candidates if DataDir(d).path(TABLE_FILE).exists()), candidates[1])


def bench_decision(args: argparse.Namespace, prompts: list[str]) -> dict[str, Any]:
    """Per prompt, what Pipeline._decide does for `auto`: the language, classify, then `engine.route` (the chain and
    its policies over the candidates serving the language), through the gateway's assembly."""
    import tempfile

    from proxy.runtime import build_runtime
    from router_plugins.assembly import Parts, RoutingEngine
    from router_plugins.classify import StaticEmbedder
    from router_plugins.classify.assembly import ClassifierSources
    from router_plugins.classify.model import MODEL_FILE, TaskModel
    from router_plugins.datadir import DataDir
    from router_plugins.embeddings import TransformerEmbedder
    from router_plugins.language import detect_language
    from router_plugins.outcomes import OutcomeSet
    from router_plugins.registry import load_registry
    from router_plugins.routers import LearnedRouter, RouterContext
    from router_plugins.types import ChatRequest

    data_dir = _data_dir(args)
    registry = load_registry(args.config)
    static = StaticEmbedder.load_or_build(data_dir)
    data = DataDir(data_dir)
    model_path = data.path(MODEL_FILE)
    task_model = TaskModel.load(model_path) if model_path.exists() else None
    served = Parts(static, ClassifierSources(data.artifacts).text_model())
    everyone = lambda m: True  # noqa: E731 - time every registry model as a candidate, keys or not
    # As served on a CPU: the text model, layers 3-4 off the request path; the forced row below adds them.
    engines: dict[str, RoutingEngine] = {"static-rules": build_runtime(registry, everyone, parts=served).engine}
    with tempfile.TemporaryDirectory() as tmp:
        # A learned router fitted on synthetic outcomes over the registry's models. Its cost barely depends on them,
        # except through the prompt-format groups inner CV keeps (each adds featurising to every decision): the
        # outcomes follow the format features, so the fit keeps them and the decision pays for them (the worst case).
        from router_plugins.routers.prompt_format import format_features

        artifacts = Path(tmp)
        rng = np.random.default_rng(0)
        names = [m.name for m in registry.models]
        train = prompts[:2000]
        logits = format_features(train) @ rng.normal(0, 2, (len(format_features([""])[0]), len(names)))
        quality = (rng.random(logits.shape) < 1 / (1 + np.exp(-logits))).astype(float)
        outcomes = OutcomeSet([str(i) for i in range(len(train))], train, [None] * len(train), [None] * len(train),
                              names, quality, rng.uniform(1e-5, 1e-2, (len(train), len(names))))  # fmt: skip
        learned = LearnedRouter(registry, RouterContext(static_embed=static.embed))
        learned.fit(outcomes)
        kept = learned.format_groups
        learned.save(artifacts)
        engines["learned"] = build_runtime(registry, everyone, artifacts, served).engine
        if task_model is not None:
            forced = Parts(static, task_model=task_model)
            engines["forced"] = build_runtime(registry, everyone, artifacts, forced).engine
    transformer = TransformerEmbedder() if task_model is not None else None

    sample = prompts[: args.decisions]
    out: dict[str, Any] = {"data_dir": str(data_dir), "task_model": task_model is not None,
                           "candidates": len(registry.models), "learned_format_groups": kept}  # fmt: skip
    modes = [("default cascade + static rules", "static-rules", False), ("default cascade + learned", "learned", False)]
    if transformer is not None:
        modes.append(("transformer forced + learned", "forced", True))
    for label, which, forced_embedding in modes:
        engine = engines[which]
        latencies, routers, wants = [], {}, 0
        deadline = time.perf_counter() + args.budget
        for i, text in enumerate(sample):
            request = ChatRequest(f"bench-{i}", "auto", ({"role": "user", "content": text},))
            t0 = time.perf_counter()
            language = detect_language(text)
            classification = engine.classify(text)
            wants += engine.classifier.wants_embedding(classification)
            if forced_embedding:  # every prompt embedded, as if the cheap layers were never sure
                vector = transformer.embed([text])[0]  # type: ignore[union-attr]
                classification = engine.classifier.resume(text, vector, classification)
            decision = engine.route(request, classification, language).decision
            latencies.append(time.perf_counter() - t0)
            routers[decision.router] = routers.get(decision.router, 0) + 1
            if time.perf_counter() > deadline:
                break
        out[label] = {**summary(latencies), "routers": routers, "would_embed": wants}
    return out


def environment() -> dict[str, Any]:
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "cuda": torch.cuda.is_available(),
        "load_avg_1m": os.getloadavg()[0],
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(default)"),
    }


def table(r: dict[str, Any]) -> str:
    rows = [
        ("embed, server, sequential", r["embed_sequential"], ""),
        ("embed, direct (no server)", r["embed_direct"], ""),
        ("embed, server, cache hit", r["embed_cache_hit"], ""),
        ("embed, server, concurrent", r["embed_concurrent"],
         f"{r['embed_concurrent']['concurrency']} callers, mean batch {r['embed_concurrent']['mean_batch']:.1f}"),
        ("classify, as served (CPU)", r["classify"], ", ".join(f"{k} {v}" for k, v in sorted(r["classify"]["layers"].items()))),
    ]  # fmt: skip
    seq = r["embed_sequential"]["mean_ms"]
    lines = [
        f"MiniLM on {r['device']} (loaded in {r['model_load_s']:.1f} s), torch {r['environment']['torch_threads']} "
        f"threads, {r['environment']['cpus']} CPUs, load average {r['environment']['load_avg_1m']:.2f}, "
        f"OMP_WAIT_POLICY {r['environment']['omp_wait_policy']}",
        f"{'':<28}{'n':>6}{'p50 ms':>10}{'p99 ms':>10}{'mean ms':>10}{'texts/s':>10}  notes",
    ]
    for name, s, note in rows:
        rate = s.get("per_s", 1000 / s["mean_ms"] if s["mean_ms"] else 0.0)
        lines.append(f"{name:<28}{s['n']:>6}{s['p50_ms']:>10.3f}{s['p99_ms']:>10.3f}{s['mean_ms']:>10.3f}{rate:>10.0f}  {note}")
    lines.append(f"routing decision (language, classify, route; {r['decision']['candidates']} candidates):")
    for label, d in r["decision"].items():
        if isinstance(d, dict):
            lines.append(f"  {label:<32}{d['n']:>6}{d['p50_ms']:>10.3f}{d['p99_ms']:>10.3f}{d['mean_ms']:>10.3f}"
                         f"{1000 / d['mean_ms']:>10.0f}  routers {d['routers']}; layers 3-4 wanted by {d['would_embed']}")  # fmt: skip
    lines.append(f"  (the learned router kept the format groups {r['decision']['learned_format_groups']})")
    lines.append(f"batching speed-up over one-at-a-time: {r['embed_concurrent']['per_s'] * seq / 1000:.1f}x")
    if "static_layer_p50_ms" in r["classify"]:
        c = r["classify"]
        lines.append(f"static embedding layer alone: p50 {c['static_layer_p50_ms']:.3f} ms, p99 {c['static_layer_p99_ms']:.3f} ms "
                     f"(prompts of {c['mean_chars']:.0f} chars on average)")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
