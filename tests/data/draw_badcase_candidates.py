"""Draws the candidate titles of tests/data/badcase_labeled_real.jsonl from real generations.

    .venv/bin/python tests/data/draw_badcase_candidates.py [--out var/badcase_candidates.jsonl]

Seeded and deterministic for the same lake contents. It reads two data sets:

* sample-cycle: the default sample cycles (`var/lake/cycles/*/` and the older ones under
  `../var.prev/lake/cycles/*/`);
* amazon-cycle: the Amazon industrial cycle (`var/amazon/lake/cycles/*/`).

From each cycle it takes the titles the Badcase Killer judged (`kill_badcases/verdicts`)
and the texts `generate` decoded but dropped before the killer (`generate/failed`: a title
that would end cut off or ran over its token budget, joined with `match_ads`' request for
the ad's texts; `origin: generate_failed`). Rows are de-duplicated by (title,
original_title) per data set and drawn stratified, so both data sets and the rare strata
are well represented:

    stratum           sample  amazon
    killed (any reason but duplicate_variant: a cross-row rule)   all     all
    generate_failed       40      30
    passed, query-aware  130       -   (the Amazon cycle has no queries)
    passed, query-free   300     260

The killer's verdict is used only to stratify; it is not written to the candidates, which
are shuffled, so whoever labels them does not see it. Labels are added by reading each
title against the guideline (docs/badcase-labeling-guideline.md), never by running rules.
"""

from __future__ import annotations

import argparse
import ast
import glob
import json
import random
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[2]
SEED = 20261202
DATASETS = {
    "sample-cycle": {"catalog": "sample",
                     "cycles": [str(ROOT / "var/lake/cycles/*"),
                                str(ROOT.parent / "var.prev/lake/cycles/*")],
                     "quota": {"killed": None, "generate_failed": 40, "passed_query": 130,
                               "passed": 300}},
    "amazon-cycle": {"catalog": "amazon",
                     "cycles": [str(ROOT / "var/amazon/lake/cycles/*")],
                     "quota": {"killed": None, "generate_failed": 30, "passed_query": 0,
                               "passed": 260}},
}
FIELDS = ("request_id", "ad_id", "advertiser_id", "category", "strategy", "query", "title",
          "original_title", "selling_points", "brand")


def failed_text(detail: str | None) -> str | None:
    """The decoded text in a `generate/failed` detail ("…: 'text'")."""
    if not detail or ": " not in detail:
        return None
    try:
        text = ast.literal_eval(detail.split(": ", 1)[1])
    except (ValueError, SyntaxError):
        return None
    return text.strip() if isinstance(text, str) and text.strip() else None


def cycle_rows(cycle: Path) -> list[dict]:
    """(row, stratum) pairs of one cycle: judged titles and dropped decodes."""
    rows = []
    verdicts = cycle / "kill_badcases" / "verdicts.parquet"
    if verdicts.is_file():
        for r in pq.read_table(verdicts).to_pylist():
            killed = [c for c in r["reasons"] if c != "duplicate_variant"]
            stratum = ("killed" if killed else "passed_query" if r["query"] else "passed")
            rows.append(({k: r[k] for k in FIELDS} | {"origin": "verdicts",
                                                     "cycle_id": cycle.name}, stratum))
    failed, requests = cycle / "generate" / "failed", (
        cycle / "match_ads" / "generation_requests.parquet")
    if failed.is_dir() and requests.is_file():
        req = {r["request_id"]: r for r in pq.read_table(requests).to_pylist()}
        for f in pq.read_table(failed).to_pylist():
            text, r = failed_text(f["detail"]), req.get(f["request_id"])
            if text and r:
                row = {k: r[k] for k in FIELDS if k in r} | {
                    "title": text, "original_title": r["title"], "origin": "generate_failed",
                    "cycle_id": cycle.name}
                rows.append((row, "generate_failed"))
    return rows


def draw(seed: int = SEED) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for source, spec in DATASETS.items():
        seen, strata = set(), {}
        cycles = sorted({Path(p) for pat in spec["cycles"] for p in glob.glob(pat)},
                        key=lambda p: (p.name, str(p)), reverse=True)  # newest first
        for cycle in cycles:
            for row, stratum in cycle_rows(cycle):
                key = (row["title"], row["original_title"])
                if key not in seen:
                    seen.add(key)
                    strata.setdefault(stratum, []).append(row)
        picked = []
        for stratum, quota in spec["quota"].items():
            pool = sorted(strata.get(stratum, []), key=lambda r: (r["cycle_id"], r["request_id"]))
            n = len(pool) if quota is None else min(quota, len(pool))
            picked += rng.sample(pool, n)
        rng.shuffle(picked)
        prefix = source[0]
        for i, row in enumerate(picked):
            out.append({"id": f"{prefix}{i:04d}", "source": source,
                        "catalog": spec["catalog"], **row,
                        "selling_points": list(row.get("selling_points") or [])})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "var" / "badcase_candidates.jsonl")
    ap.add_argument("--seed", type=int, default=SEED)
    args = ap.parse_args()
    rows = draw(args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    by = {}
    for r in rows:
        by[(r["source"], r["origin"])] = by.get((r["source"], r["origin"]), 0) + 1
    print(f"{len(rows)} candidates -> {args.out}: {by}")


if __name__ == "__main__":
    main()
