"""Benchmarks for cluster_users and match_ads at scale.

    python tests/benchmarks/bench_cluster.py                      # 1M users x 384, K=256
    python tests/benchmarks/bench_cluster.py --users 100000 --ads 10000

1. k-means: `creative-factory cluster-users` on 1M synthetic user embeddings (384-d, 400
   latent groups + noise) into 256 clusters: wall time and peak RSS of the process.
2. Stability: a second cycle where 5% of users changed (their embeddings replaced by other
   users'): the share of users keeping their cluster id, without a refit (centroids fixed)
   and after a forced full refit (warm start + Hungarian id matching).
3. match_ads: 100k active ads x the 256 centroids through the stage's `match()` with the
   default Item-User Predictor architecture (random weights: speed does not depend on the
   values), at the default `match.candidates` and the predictor's full-scoring throughput.
4. Work saved: generation requests against one request per (user, ad).

Results are printed as Markdown and saved to var/bench/cluster.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.benchmarks.bench_features import machine, measure  # noqa: E402

CLI = str(Path(sys.executable).with_name("creative-factory"))
C1, C2, C3 = "20261101T000000Z", "20261101T050000Z", "20261101T100000Z"


def write_embed_users(lake: Path, cycle_id: str, users: np.ndarray, x: np.ndarray) -> None:
    from jobs.platform.lake import StageRun

    stage = StageRun(lake, cycle_id, "embed_users", {"bench": cycle_id}, "bench")
    out = stage.begin()
    step = 200_000
    schema = pa.schema([("user_id", pa.string()), ("embedding", pa.list_(pa.float32(), x.shape[1])),
                        ("history_used", pa.int32()), ("model_version", pa.string())])
    with pq.ParquetWriter(out / "shard-00000.parquet", schema) as w:
        for s in range(0, len(x), step):
            n = len(x[s:s + step])
            w.write_table(pa.table({
                "user_id": pa.array(users[s:s + step]),
                "embedding": pa.FixedSizeListArray.from_arrays(
                    pa.array(x[s:s + step].reshape(-1)), x.shape[1]),
                "history_used": pa.array(np.full(n, 50, np.int32)),
                "model_version": pa.array(["hllm-bench"] * n)}, schema=schema))
    stage.commit({"user_embeddings": {"path": str(stage.final), "rows": len(x)}},
                 extra={"model_version": "hllm-bench"})


def cluster_cmd(lake: Path, cycle_id: str, k: int, *extra: str) -> list[str]:
    return [CLI, "cluster-users", "--cycle-id", cycle_id, "--set", f"lake={lake}",
            "--set", f"cluster.k={k}", *[a for e in extra for a in ("--set", e)]]


def bench_matching(lake: Path, ads: int, seed: int) -> dict:
    import torch

    from jobs.platform.config import load_config
    from jobs.platform.lake import read_manifest, stage_dir
    from jobs.stages import match_ads
    from models.predictor import ItemUserPredictor, PredictorConfig

    # the point plan needs click histories, which this synthetic catalog has none of: the
    # benchmark times scoring and request writing without it (README "Known limits")
    cfg = load_config(overrides=[f"lake={lake}", "match.plan_neighbours=0"], environ={})
    rng = np.random.default_rng(seed)
    clusters = read_manifest(stage_dir(lake, C1, "cluster_users"))
    dim = 384
    work = lake / "match-inputs"
    work.mkdir(parents=True, exist_ok=True)
    hashes = [f"{i:016x}" for i in range(ads)]
    pq.write_table(pa.table({
        "ad_id": [f"ad{i}" for i in range(ads)], "advertiser_id": [f"adv{i % 5000}" for i in range(ads)],
        "campaign_id": [f"c{i}" for i in range(ads)], "title": [f"title {i}" for i in range(ads)],
        "selling_points": [["free shipping", "two year warranty"]] * ads,
        "brand": ["Brand"] * ads, "category": [f"cat{i % 15}" for i in range(ads)],
        "updated_at": ["2026-11-01T00:00:00Z"] * ads, "item_hash": hashes,
        "content_hash": [f"h{i}" for i in range(ads)]}), work / "active_ads.parquet")
    pq.write_table(pa.table({"ad_id": [f"ad{i}" for i in range(ads)],
                             "query": [f"query {i % 997}" for i in range(ads)],
                             "clicks": [3] * ads, "query_rank": [1] * ads}),
                   work / "ad_queries.parquet")
    items = rng.normal(size=(ads, dim)).astype(np.float32)
    pq.write_table(pa.table({"item_hash": hashes, "embedding": pa.FixedSizeListArray.from_arrays(
        pa.array(items.reshape(-1)), dim)}), work / "item_embeddings.parquet")
    manifests = {
        "extract_features": {"outputs": {
            "active_ads": {"path": str(work / "active_ads.parquet")},
            "ad_queries": {"path": str(work / "ad_queries.parquet")}}},
        "embed_items": {"outputs": {"item_embeddings": {"path": str(work / "item_embeddings.parquet")}}},
        "cluster_users": clusters}
    torch.manual_seed(0)
    pc = cfg.hllm.predictor
    predictor = ItemUserPredictor(PredictorConfig(dim=dim, depth=pc.depth, width=pc.width,
                                                  dropout=pc.dropout)).eval()
    out = lake / "match-out"
    out.mkdir(exist_ok=True)
    started = time.time()
    result = match_ads.match(cfg, C1, manifests, predictor, "hllm-bench", "creator-bench", out)
    seconds = time.time() - started
    # the predictor's full-scoring throughput, for the cost of scoring every cluster
    cents = pq.read_table(clusters["outputs"]["centroids"]["path"])
    c = np.asarray(cents.column("centroid").combine_chunks().flatten(), np.float32).reshape(
        cents.num_rows, -1)
    sub = 400
    t = time.time()
    match_ads.score_clusters(predictor, items[:sub], c, top=5, candidates=0,
                             batch_size=cfg.match.batch_size)
    pairs_per_s = sub * len(c) / (time.time() - t)
    return {"ads": ads, "clusters": int(cents.num_rows), "candidates": cfg.match.candidates,
            "seconds": round(seconds, 1), "requests": result["summary"]["requests"],
            "predictor_pairs_per_s": round(pairs_per_s),
            "full_scoring_estimate_s": round(ads * len(c) / pairs_per_s)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--ads", type=int, default=100_000)
    ap.add_argument("--k", type=int, default=256)
    ap.add_argument("--groups", type=int, default=400)
    ap.add_argument("--changed", type=float, default=0.05)
    ap.add_argument("--out", type=Path, default=ROOT / "var" / "bench")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    lake = args.out / f"cluster-{args.users}u"
    import shutil

    shutil.rmtree(lake, ignore_errors=True)
    rng = np.random.default_rng(args.seed)
    dim = 384
    centers = rng.normal(size=(args.groups, dim)).astype(np.float32)
    group = rng.integers(0, args.groups, args.users)
    x = centers[group] + rng.normal(scale=0.6, size=(args.users, dim)).astype(np.float32)
    users = np.array([f"user{i:08d}" for i in range(args.users)])
    write_embed_users(lake, C1, users, x)
    results: dict = {"machine": machine(), "users": args.users, "dim": dim, "k": args.k}
    print(f"k-means: {args.users:,} x {dim} into {args.k} clusters ...", flush=True)
    results["kmeans"] = measure(cluster_cmd(lake, C1, args.k))

    changed = rng.choice(args.users, int(args.users * args.changed), replace=False)
    x[changed] = centers[rng.integers(0, args.groups, len(changed))] + rng.normal(
        scale=0.6, size=(len(changed), dim)).astype(np.float32)
    write_embed_users(lake, C2, users, x)
    results["assign_no_refit"] = measure(cluster_cmd(lake, C2, args.k))
    write_embed_users(lake, C3, users, x)
    results["refit_warm_start"] = measure(cluster_cmd(lake, C3, args.k, "cluster.refit_every_hours=1"))

    from jobs.platform.lake import read_manifest, stage_dir
    from jobs.stages.cluster_users import stability

    def assignments(c):
        return stage_dir(lake, c, "cluster_users") / "assignments.parquet"

    results["stability_no_refit"] = stability(assignments(C1), assignments(C2))
    results["stability_refit"] = stability(assignments(C2), assignments(C3))
    results["stability_refit_vs_first"] = stability(assignments(C1), assignments(C3))
    results["cluster_summary"] = read_manifest(stage_dir(lake, C3, "cluster_users"))["summary"]
    print(f"match_ads: {args.ads:,} ads ...", flush=True)
    results["matching"] = bench_matching(lake, args.ads, args.seed)
    m = results["matching"]
    results["work_saved"] = {"per_user_requests": args.users * args.ads,
                             "requests": m["requests"],
                             "ratio": round(args.users * args.ads / m["requests"], 1)}

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cluster.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"\nMachine: {results['machine']}\n")
    print("| measurement | result |\n|---|---|")
    for name in ("kmeans", "assign_no_refit", "refit_warm_start"):
        r = results[name]
        print(f"| cluster-users {name} | {r['seconds']} s, peak RSS {r['peak_rss_gb']} GB |")
    for name in ("stability_no_refit", "stability_refit", "stability_refit_vs_first"):
        print(f"| {name} ({args.changed:.0%} users changed) | "
              f"{results[name]['kept_cluster_share']:.2%} keep their cluster id |")
    print(f"| match_ads {m['ads']:,} ads x {m['clusters']} clusters (candidates {m['candidates']}) "
          f"| {m['seconds']} s, {m['requests']:,} requests |")
    print(f"| predictor full scoring | {m['predictor_pairs_per_s']:,} pairs/s "
          f"(every cluster for every ad: ~{m['full_scoring_estimate_s']} s) |")
    w = results["work_saved"]
    print(f"| work saved | {w['requests']:,} requests vs {w['per_user_requests']:,} "
          f"(one per user and ad): {w['ratio']:,}x |")
    shutil.rmtree(lake, ignore_errors=True)


if __name__ == "__main__":
    main()
