"""The real-traffic labelled set: real user prompts in many languages plus benchmark formats, split once.

The texts come from `../shared/data` (public sources with redistributable licences; see
`bench/data/real_prompts/README.md`); the data's owners ask that they are read from there, not copied into this
repository, so the repository keeps the labels, provenance and split of every prompt in
`bench/data/real_prompts/manifest.jsonl`, and this module rebuilds the texts from it.

    python bench/real_prompts.py manifest            # (re)write the manifest from ../shared/data
    python bench/real_prompts.py export --split test --out /tmp/real-test.jsonl   # texts for `autoroute eval tasks`

The split is by group (the same MGSM problem or XCOPA item in eleven languages, the same NTREX sentence or HumanEval
function under several requests is one group), 30% of groups in `test`, fixed by a hash: never tune on `test`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
MANIFEST = ROOT / "bench" / "data" / "real_prompts" / "manifest.jsonl"
TEST_SHARE = 0.3

MC_TEMPLATES = (
    "{q}",
    "{q}\nAnswer:",
    "Answer the following multiple choice question. Reply with the letter only.\n\n{q}",
    "Read the multiple-choice question below and pick the most likely correct answer from the options.\n\n{q}",
    "The following is a multiple choice question about {subject}. Think step by step and then finish your answer "
    'with "the answer is (X)" where X is the correct letter choice.\n\nQuestion: {q}',
    "Question: {q}\nPlease choose the correct option and explain briefly.",
    "which one is right?\n\n{q}",
    "Here's a question from my {subject} exam, can you help me pick the answer?\n{q}",
)
FEW_SHOT_HEAD = (
    "Answer the questions.\n\n",
    "The following are example questions with answers. Answer the last one in the same way.\n\n",
    "",
)
MATH_SUBJECTS = {
    "abstract_algebra", "college_mathematics", "elementary_mathematics", "high_school_mathematics",
    "high_school_statistics", "econometrics", "math",
}  # fmt: skip
CODE_SUBJECTS = {"college_computer_science", "high_school_computer_science", "computer_security", "machine_learning",
                 "computer science"}  # fmt: skip
LOGIC_SUBJECTS = {"formal_logic", "logical_fallacies"}


def group_key(record_id: str) -> str:
    """Prompts that share their content (one item in several languages or under several requests) share a group."""
    for pattern, key in (
        (r"^mgsm-[a-z]+-(\d+)$", "mgsm-{}"),
        (r"^xcopa-[a-z]+-(\d+)$", "xcopa-{}"),
        (r"^mintaka-([0-9a-f]+)-[a-z]+$", "mintaka-{}"),
        (r"^ntrex-.*-(\d+)$", "ntrex-{}"),
        (r"^humaneval-.*-(\d+)$", "humaneval-{}"),
    ):
        found = re.match(pattern, record_id)
        if found:
            return key.format(found.group(1))
    return record_id


def split_of(record_id: str) -> str:
    digest = hashlib.blake2b(group_key(record_id).encode(), digest_size=8).digest()
    return "test" if int.from_bytes(digest, "big") / 2**64 < TEST_SHARE else "train"


def subject_label(subject: str) -> tuple[str, list[str]]:
    """A multiple-choice question is labelled by its subject: math is math, logic is reasoning, the rest knowledge."""
    if subject in MATH_SUBJECTS:
        return "math", ["math", "reasoning"]
    if subject in CODE_SUBJECTS:
        return "knowledge", ["knowledge", "coding"]
    if subject in LOGIC_SUBJECTS:
        return "reasoning", ["reasoning", "knowledge"]
    return "knowledge", ["knowledge", "reasoning"]


def _jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def _user_text(record: dict[str, Any]) -> str:
    return next(m["content"] for m in reversed(record["messages"]) if m["role"] == "user")


def _benchmark_rows(rng: random.Random) -> list[dict[str, Any]]:
    """Multiple-choice and few-shot prompts in the wrappers users and eval harnesses put around them."""
    rows: list[dict[str, Any]] = []
    sources = (
        ("routellm", "lm-sys/RouteLLM:routellm/evals (MMLU)", "Apache-2.0 (MMLU: MIT)", 420),
        ("mmlu_pro", "TIGER-AI-Lab/MMLU-Pro:eval_results", "Apache-2.0 / MIT", 260),
    )
    for name, source, licence, count in sources:
        records = [r for r in _jsonl(SHARED / "routing" / name / "train.jsonl") if r.get("domain")]
        records = [r for r in records if not r["id"].startswith("gsm8k")]
        rng.shuffle(records)
        for record in records[:count]:
            subject = str(record["domain"])
            question = re.sub(r"\nAnswer:\s*$", "", _user_text(record).strip())
            template = rng.choice(MC_TEMPLATES)
            task, accept = subject_label(subject)
            rows.append(_row(f"mc-{record['id']}", template, question, subject, task, accept, source, licence,
                             "multiple_choice"))  # fmt: skip
    gsm = [r for r in _jsonl(SHARED / "routing" / "routellm" / "train.jsonl") if r["id"].startswith("gsm8k")]
    rng.shuffle(gsm)
    for i in range(60):
        shots = gsm[3 * i : 3 * i + 3]
        body = "".join(f"Q: {_user_text(r).strip()}\nA: {_final_answer(r)}\n\n" for r in shots[:2])
        text = rng.choice(FEW_SHOT_HEAD) + body + f"Q: {_user_text(shots[2]).strip()}\nA:"
        rows.append({"id": f"fewshot-{shots[2]['id']}", "text": text, "task": "math", "accept": ["math", "reasoning"],
                     "language": "en", "source": "lm-sys/RouteLLM:routellm/evals (GSM8K)", "licence": "Apache-2.0 (GSM8K: MIT)",
                     "format": "few_shot"})  # fmt: skip
    return rows


def _final_answer(record: dict[str, Any]) -> str:
    response = next((o.get("response") for o in record["outcomes"].values() if o.get("response")), None) or ""
    numbers = re.findall(r"-?\d[\d,]*\.?\d*", response)
    return numbers[-1].rstrip(".") if numbers else "42"


def _row(record_id: str, template: str, question: str, subject: str, task: str, accept: list[str], source: str,
         licence: str, fmt: str) -> dict[str, Any]:  # fmt: skip
    text = template.format(q=question, subject=subject.replace("_", " "))
    return {"id": record_id, "text": text, "task": task, "accept": accept, "language": "en", "source": source,
            "licence": licence, "format": fmt, "subject": subject}  # fmt: skip


def build() -> list[dict[str, Any]]:
    """Every prompt with its text, labels, language, provenance, format and split."""
    rows = []
    for record in _jsonl(SHARED / "tasks" / "real_dev.jsonl"):
        rows.append(record | {"format": "user"})
    rows += _benchmark_rows(random.Random(10))
    for row in rows:
        row["split"] = split_of(row["id"])
    return rows


def write_manifest(rows: list[dict[str, Any]]) -> None:
    MANIFEST.parent.mkdir(parents=True, exist_ok=True)
    with MANIFEST.open("w", encoding="utf-8") as handle:
        for row in rows:
            entry = {k: v for k, v in row.items() if k != "text"}
            entry["sha1"] = hashlib.sha1(row["text"].encode()).hexdigest()[:12]
            handle.write(json.dumps(entry, ensure_ascii=False) + "\n")


def load(split: str | None = None) -> list[dict[str, Any]]:
    """The prompts of `split` (train, test or all), rebuilt from ../shared/data and checked against the manifest."""
    manifest = {r["id"]: r for r in _jsonl(MANIFEST)}
    rows = build()
    for row in rows:
        entry = manifest.get(row["id"])
        if entry is None or entry["sha1"] != hashlib.sha1(row["text"].encode()).hexdigest()[:12]:
            raise SystemExit(f"{row['id']}: not in the manifest or its text changed; rebuild with `manifest`")
        row.update({k: v for k, v in entry.items() if k != "sha1"})  # the manifest's labels win
    return [r for r in rows if split in (None, "all", r["split"])]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("manifest")
    export = sub.add_parser("export")
    export.add_argument("--split", choices=("train", "test", "all"), default="test")
    export.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "manifest":
        rows = build()
        write_manifest(rows)
        print(json.dumps({"prompts": len(rows), "splits": Counter(r["split"] for r in rows),
                          "non_english": sum(r["language"] != "en" for r in rows)}))  # fmt: skip
        return 0
    rows = load(args.split)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{len(rows)} prompts -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
