"""Badcase Killer throughput at scale: the kill_badcases stage on 1M generations, run with
one worker and with N worker processes, side by side in one run.

    python tests/benchmarks/bench_killer.py                     # 1M generations, N = cores
    python tests/benchmarks/bench_killer.py --rows 200000 --workers 2

The generations are made from the real generations of the cycles under `var/` (the sample
cycle `var/lake/cycles/*` and the Amazon cycle `var/amazon/lake/cycles/*`, whose titles and
selling points are long): every ad is cloned into many ads (own ad id, its selling points
rotated or one dropped, so each clone is a distinct source the killer analyses afresh), and
each of its generated titles is resampled with a perturbation (clauses shuffled or dropped,
a selling point appended, an audience framing added) or a planted bad case (a place, a
medical claim, a percentage, a protected audience, an invented feature). Without those
cycles the titles are synthesized from the sample catalog (`--long-share` of them
lengthened with selling points, like Amazon titles).

Each run is the whole stage (`kill_badcases.run --force`: read, judge, write verdicts and
passing rows); the two runs' verdicts must be identical. Prints titles/s, the projected
time for 1M generations and the machine; saves var/bench/killer.json. The runs share the
machine with whatever else runs on it: compare the two columns of one run, not numbers of
different runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.benchmarks.bench_features import machine  # noqa: E402

CYCLE = "20261101T000000Z"
POOLS = {"sample": ROOT / "var" / "lake" / "cycles", "amazon": ROOT / "var" / "amazon" / "lake" / "cycles"}
FRAMINGS = ["For busy office workers: {t}", "Weekend joggers' pick: {t}", "{t} for commuters",
            "For home cooks: {t}", "Gamers' choice: {t}", "{t}, for travelers"]
PLANTED = ["{t} - now in Paris", "{t}, cures insomnia", "{t}, 300% more power",
           "For seniors: {t}", "{t} with titanium frame", "For moms: {t}", "{t}, 2 for $5"]
_CLAUSE = re.compile(r", | - ")


def real_pool(root: Path) -> tuple[list[dict], list[dict]] | None:
    """(ads, generated titles) of the newest cycle under `root` that has both."""
    import pyarrow.dataset as ds

    for cycle in sorted(root.glob("*"), reverse=True) if root.is_dir() else []:
        gen, ads = cycle / "generate" / "generations", cycle / "extract_features" / "active_ads"
        if gen.exists() and ads.exists():
            rows = ds.dataset(gen).to_table(columns=[
                "ad_id", "advertiser_id", "title", "query", "original_title",
                "selling_points", "brand", "category"]).to_pylist()
            active = pq.read_table(ads, columns=["ad_id", "advertiser_id", "title",
                                                 "selling_points", "brand", "category"])
            return active.to_pylist(), rows
    return None


def synthetic_pool(n_ads: int, seed: int, long: bool) -> tuple[list[dict], list[dict]]:
    """(ads, titles) from the sample catalog; `long`: titles and their ads lengthened with
    selling points, Amazon-like (100-150 characters)."""
    from jobs.sample.sample_data import SampleSpec, make_catalog
    from tests.library_support import grounded_title

    cat = make_catalog(SampleSpec(users=1, ads=n_ads, seed=seed))
    ads = cat.table.drop_columns(["status"]).to_pylist()
    rows = []
    for ad in ads:
        if long:
            ad["title"] = ", ".join([ad["title"], *ad["selling_points"][:3]])[:150]
        for k in range(5):
            rows.append({**ad, "original_title": ad["title"], "query": None,
                         "title": grounded_title(ad, k)})
    return ads, rows


def clone_ad(ad: dict, c: int, rng: random.Random) -> dict:
    """A distinct ad with the same product: own id, selling points rotated (one dropped
    every third clone)."""
    points = list(ad["selling_points"] or [])
    if points:
        k = c % len(points)
        points = points[k:] + points[:k]
        if c % 3 == 1 and len(points) > 2:
            points.pop(rng.randrange(len(points)))
    return {**ad, "ad_id": f"{ad['ad_id']}.c{c}", "selling_points": points}


def perturb(title: str, ad: dict, rng: random.Random, bad_share: float) -> str:
    r = rng.random()
    if r < bad_share:
        return rng.choice(PLANTED).format(t=title)
    r = (r - bad_share) / (1 - bad_share)
    clauses = _CLAUSE.split(title)
    if r < 0.5:
        return title
    if r < 0.62 and len(clauses) > 1:
        head, rest = clauses[0], clauses[1:]
        rng.shuffle(rest)
        return ", ".join([head, *rest])
    if r < 0.74 and len(clauses) > 1:
        return ", ".join(clauses[:-1])
    if r < 0.88 and ad["selling_points"]:
        return f"{title}, {rng.choice(ad['selling_points'])}"
    return rng.choice(FRAMINGS).format(t=title)


def build(n_rows: int, seed: int, long_share: float, bad_share: float
          ) -> tuple[pa.Table, pa.Table, dict]:
    """(active_ads, generations, description) with n_rows generations."""
    from tests.library_support import GENERATIONS_SCHEMA

    rng = random.Random(seed)
    pools = {}
    for name, root in POOLS.items():
        pool = real_pool(root)
        if pool is None:
            pool = synthetic_pool(600, seed + len(pools), long=name == "amazon")
            name = f"{name} (synthetic from the sample catalog)"
        pools[name] = pool
    shares = dict(zip(pools, [1 - long_share, long_share], strict=True))
    cols: dict[str, list] = {f.name: [] for f in GENERATIONS_SCHEMA}
    catalog: dict[str, dict] = {}
    for name, (ads, rows) in pools.items():
        want = round(n_rows * shares[name])
        by_ad: dict[str, list[dict]] = {}
        for r in rows:
            by_ad.setdefault(r["ad_id"], []).append(r)
        ad_of = {a["ad_id"]: a for a in ads}
        base = [(ad_of[a], rs) for a, rs in by_ad.items() if a in ad_of]
        made, c = 0, 0
        while made < want:
            for ad, rs in base:
                if made >= want:
                    break
                clone = clone_ad(ad, c, rng)
                catalog[clone["ad_id"]] = clone
                for k, r in enumerate(rs):
                    if made >= want:
                        break
                    q = r["query"]
                    rid = hashlib.md5(f"{clone['ad_id']}|{k}|{q}".encode()).hexdigest()
                    vals = {"request_id": rid, "ad_id": clone["ad_id"],
                            "advertiser_id": clone["advertiser_id"], "cluster_id": k,
                            "cluster_rank": 1 + k % 5,
                            "strategy": "query_aware" if q else "query_free", "query": q,
                            "title": perturb(r["title"], clone, rng, bad_share),
                            "original_title": clone["title"],
                            "selling_points": clone["selling_points"],
                            "brand": clone["brand"], "category": clone["category"],
                            "score": round(rng.random(), 4), "model_version": "creator-bench",
                            "centroid_version": "cv-bench", "hllm_version": "hllm-bench",
                            "generated_cycle_id": CYCLE, "reused": False, "output_tokens": 20}
                    for key, v in vals.items():
                        cols[key].append(v)
                    made += 1
            c += 1
    order = sorted(range(len(cols["request_id"])), key=cols["request_id"].__getitem__)
    gens = pa.table({k: pa.array([v[i] for i in order], GENERATIONS_SCHEMA.field(k).type)
                     for k, v in cols.items()}, schema=GENERATIONS_SCHEMA)
    ads = pa.Table.from_pylist([{k: a[k] for k in ("ad_id", "advertiser_id", "title",
                                                   "selling_points", "brand", "category")}
                                for a in catalog.values()])
    titles = gens.column("title").to_pylist()
    desc = {"rows": gens.num_rows, "ads": len(catalog),
            "pools": {n: round(s, 3) for n, s in shares.items()},
            "mean_title_chars": round(sum(map(len, titles)) / len(titles), 1),
            "titles_over_100_chars": round(sum(len(t) > 100 for t in titles) / len(titles), 3)}
    return ads, gens, desc


def run_stage(lake: Path, workers: int) -> tuple[float, float, dict]:
    """(wall s, CPU s of this process and its workers, manifest) of one forced stage run."""
    from jobs.platform.config import load_config
    from jobs.stages import kill_badcases

    cfg = load_config(overrides=[f"lake={lake}", f"badcase.workers={workers}"], environ={})
    c0, t0 = os.times(), time.perf_counter()
    m = kill_badcases.run(cfg, CYCLE, force=True, progress=False)
    wall, c1 = time.perf_counter() - t0, os.times()
    cpu = sum(getattr(c1, f) - getattr(c0, f)
              for f in ("user", "system", "children_user", "children_system"))
    return wall, cpu, m


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--workers", type=int, default=None, help="N (default: the CPU cores)")
    ap.add_argument("--long-share", type=float, default=0.3,
                    help="share of generations from the Amazon (long-title) pool")
    ap.add_argument("--bad-share", type=float, default=0.1, help="planted bad cases")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", type=Path, default=ROOT / "var" / "bench" / "killer")
    args = ap.parse_args()

    from tests.library_support import write_stage

    n_workers = args.workers or len(os.sched_getaffinity(0))
    t0 = time.perf_counter()
    ads, gens, desc = build(args.rows, args.seed, args.long_share, args.bad_share)
    built_s = time.perf_counter() - t0
    shutil.rmtree(args.out, ignore_errors=True)
    lake = args.out / "lake"

    fixture = SimpleNamespace(lake=lake)  # write_stage needs only the lake
    write_stage(fixture, CYCLE, "extract_features", {"active_ads": ads})
    write_stage(fixture, CYCLE, "generate", {"generations": gens})
    del ads, gens
    print(f"built {desc['rows']:,} generations of {desc['ads']:,} ads in {built_s:.0f}s "
          f"(mean title {desc['mean_title_chars']} chars, "
          f"{100 * desc['titles_over_100_chars']:.0f}% over 100; pools {desc['pools']})",
          flush=True)

    results, verdicts = [], {}
    for w in dict.fromkeys([1, n_workers]):
        load_before = os.getloadavg()[0]
        wall, cpu, m = run_stage(lake, w)
        path = m["outputs"]["verdicts"]["path"]
        verdicts[w] = pq.read_table(path, columns=["request_id", "passed", "reasons",
                                                   "details"])
        rate = desc["rows"] / wall
        results.append({"workers": w, "wall_s": round(wall, 1),
                        "judge_s": m["timings_s"]["judge"], "cpu_s": round(cpu, 1),
                        "titles_per_s": round(rate),
                        "titles_per_cpu_s": round(desc["rows"] / cpu),
                        "projected_1m_s": round(1_000_000 / rate), "passed": m["counts"]["passed"],
                        "load_before": round(load_before, 2)})
        print(f"  workers={w}: {wall:.1f}s wall, {cpu:.1f}s CPU, {rate:,.0f} titles/s, 1M in "
              f"{1_000_000 / rate / 60:.1f} min (load avg before {load_before:.2f})", flush=True)
    same = all(verdicts[w].equals(verdicts[1]) for w in verdicts)
    info = {"machine": machine(), "cores_usable": len(os.sched_getaffinity(0)), **desc,
            "runs": results, "verdicts_identical": same,
            "note": "whole kill_badcases stage (read, judge, write); shared machine: compare "
                    "the runs of one invocation"}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out.parent / "killer.json").write_text(json.dumps(info, indent=2))
    print(f"\n### Badcase Killer, {desc['rows']:,} generations ({machine()})\n")
    print("| workers | stage wall | judging | CPU (all processes) | titles/s | titles/CPU-s "
          "| projected 1M |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['workers']} | {r['wall_s']:.0f} s | {r['judge_s']:.0f} s | "
              f"{r['cpu_s']:.0f} s | {r['titles_per_s']:,} | {r['titles_per_cpu_s']:,} | "
              f"{r['projected_1m_s'] / 60:.1f} min |")
    if len(results) > 1:
        print(f"\nspeed-up {results[0]['wall_s'] / results[-1]['wall_s']:.2f}x with "
              f"{results[-1]['workers']} workers; verdicts identical: {same}; load average "
              f"before each run {[r['load_before'] for r in results]} (other jobs share "
              "the cores)")
    if not same:
        sys.exit("verdicts differ between worker counts")


if __name__ == "__main__":
    main()
