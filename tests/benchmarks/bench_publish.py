"""Badcase Killer and library publish benchmarks on the embedded S3 server (rclone).

    python tests/benchmarks/bench_publish.py                      # 1M variants
    python tests/benchmarks/bench_publish.py --variants 100000 --kill 20000

1. kill_badcases throughput: `creative-factory kill-badcases` on `--kill` generations
   (catalog ads x clusters, grounded titles plus 10% planted bad ones).
2. publish_library of `--variants` passing variants (written as a kill_badcases output)
   to the embedded rclone `serve s3` over var/bench/publish/s3: `creative-factory
   publish-library`, wall time and peak RSS of the process tree (rclone included).
3. The same publish again with --force: every object is compared by checksum and skipped.

Machine and results are printed as Markdown and saved to var/bench/publish.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import pyarrow as pa

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.benchmarks.bench_features import machine, measure  # noqa: E402

CLI = str(Path(sys.executable).with_name("creative-factory"))
CYCLE = "20261101T000000Z"
CLUSTERS = 6  # per ad: 1 query-aware + 5 query-free, as match_ads plans


def generations(n_rows: int, seed: int, bad_share: float) -> tuple[pa.Table, pa.Table]:
    """(active_ads, generations) with about n_rows generations."""
    import random

    from jobs.sample.sample_data import SampleSpec, make_catalog
    from tests.library_support import generation_row, generations_table, grounded_title

    n_ads = max(1, n_rows // CLUSTERS)
    cat = make_catalog(SampleSpec(users=1, ads=n_ads, seed=seed))
    ads = cat.table.drop_columns(["status"])
    ads = ads.append_column("item_hash", pa.array([f"{i:016x}" for i in range(ads.num_rows)]))
    ads = ads.append_column("content_hash", pa.array([f"{i:016x}"[::-1]
                                                      for i in range(ads.num_rows)]))
    queries = cat.queries.to_pylist()
    rng = random.Random(seed)
    rows = []
    for i, ad in enumerate(ads.to_pylist()):
        for k in range(CLUSTERS):
            title = grounded_title(ad, k)
            if rng.random() < bad_share:
                title += rng.choice([" - now in Paris", " cures insomnia", ", 300% more",
                                     " for seniors", " with titanium frame"])
            if k == 0:
                q = queries[3 * i]
                rows.append(generation_row(ad, 0, f"{q.capitalize()}: {title}",
                                           strategy="query_aware", query=q, score=0.9))
            else:
                rows.append(generation_row(ad, k, title, rank=k, score=0.9 - 0.1 * k))
    return ads, generations_table(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", type=int, default=1_000_000)
    ap.add_argument("--kill", type=int, default=100_000, help="generations for kill_badcases")
    ap.add_argument("--out", type=Path, default=ROOT / "var" / "bench" / "publish")
    args = ap.parse_args()

    from jobs.platform.config import load_config
    from tests.library_support import write_stage

    shutil.rmtree(args.out, ignore_errors=True)
    sets = [f"lake={args.out / 'lake'}", f"library.embedded_dir={args.out / 's3'}",
            "library.endpoint_url=null"]
    cfg = load_config(overrides=sets)
    flags = [x for s in sets for x in ("--set", s)]
    results: dict = {"machine": machine(), "variants": args.variants, "kill": args.kill}

    t = time.time()
    ads, gens = generations(args.kill, seed=1, bad_share=0.1)
    write_stage(cfg, CYCLE, "extract_features", {"active_ads": ads})
    write_stage(cfg, CYCLE, "generate", {"generations": gens})
    print(f"built {gens.num_rows:,} generations in {time.time() - t:.0f}s", flush=True)
    r = measure([CLI, "kill-badcases", "--cycle-id", CYCLE, *flags])
    results["kill_badcases"] = {**r, "generations": gens.num_rows,
                                "titles_per_s": round(gens.num_rows / r["seconds"])}
    print(json.dumps(results["kill_badcases"]), flush=True)

    t = time.time()
    ads, gens = generations(args.variants, seed=2, bad_share=0.0)
    write_stage(cfg, CYCLE, "extract_features", {"active_ads": ads})
    write_stage(cfg, CYCLE, "match_ads", {}, extra={"summary": {  # the gate's denominators
        "requests": gens.num_rows, "ads_matched": len(gens.column("ad_id").unique())}})
    write_stage(cfg, CYCLE, "kill_badcases", {"passing": gens, "verdicts": gens},
                extra={"counts": {"generations": gens.num_rows, "killed": 0}})
    print(f"built {gens.num_rows:,} passing variants in {time.time() - t:.0f}s", flush=True)
    r = measure([CLI, "publish-library", "--cycle-id", CYCLE, *flags])
    m = json.loads((args.out / "lake" / "cycles" / CYCLE / "publish_library" /
                    "_SUCCESS").read_text())
    results["publish"] = {**r, "rows": m["outputs"]["library"]["rows"],
                          "objects": m["objects"], "upload": m["upload"],
                          "steps_s": m["timings_s"]}
    print(json.dumps(results["publish"]), flush=True)
    r = measure([CLI, "publish-library", "--cycle-id", CYCLE, "--force", *flags])
    m = json.loads((args.out / "lake" / "cycles" / CYCLE / "publish_library" /
                    "_SUCCESS").read_text())
    results["republish"] = {**r, "upload": m["upload"], "steps_s": m["timings_s"]}

    out = ROOT / "var" / "bench" / "publish.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    k, p, rp = results["kill_badcases"], results["publish"], results["republish"]
    print(f"\nMachine: {results['machine']}\n")
    print("| step | scale | wall time | peak RSS (process tree) |\n|---|---|---|---|")
    print(f"| kill_badcases | {k['generations']:,} generations | {k['seconds']:.0f} s "
          f"({k['titles_per_s']:,} titles/s) | {k['peak_rss_gb']:.2f} GB |")
    print(f"| publish_library (embedded rclone) | {p['rows']:,} variants, {p['objects']:,} "
          f"objects | {p['seconds']:.0f} s | {p['peak_rss_gb']:.2f} GB |")
    print(f"| publish again (--force, all unchanged) | same | {rp['seconds']:.0f} s | "
          f"{rp['peak_rss_gb']:.2f} GB |")
    print(f"\npublish steps (s): {p['steps_s']}")


if __name__ == "__main__":
    main()
