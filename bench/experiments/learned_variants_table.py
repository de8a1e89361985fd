"""Print the variants x sets table from learned_variants.py's JSONL output (default /tmp/learned_variants.jsonl)."""
import json
import sys
from collections import defaultdict

rows = [json.loads(l) for l in open(sys.argv[1] if len(sys.argv) > 1 else "/tmp/learned_variants.jsonl")]
by = defaultdict(dict)
for r in rows:
    by[r["variant"]][(r["set"], r["seed"])] = r
def cell(v, s, key, fmt="{:.3f}"):
    vals = [by[v].get((s, seed), {}).get(key) for seed in (0, 1)]
    if key == "max_quality":
        vals = [None if x is None else 100 * (x - by[v][(s, seed)]["best_single"]) for x, seed in zip(vals, (0, 1))]
        fmt = "{:+.1f}"
    return " / ".join("-" if x is None else fmt.format(x) for x in vals)
print("| variant | RB AIQ | LLMR AIQ | RLLM APGR | RLLM CPT50 | MMLU-Pro max−best (pts) | Alpaca max−best (pts) |")
print("|---|---|---|---|---|---|---|")
for v in by:
    print(f"| {v} | {cell(v,'routerbench','aiq')} | {cell(v,'llmrouter','aiq')} | {cell(v,'routellm','apgr')} | "
          f"{cell(v,'routellm','cpt50')} | {cell(v,'mmlu_pro','max_quality')} | {cell(v,'alpaca_eval','max_quality')} |")
