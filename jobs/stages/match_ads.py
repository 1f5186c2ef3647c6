"""Stage 5, match_ads: each active ad's best user clusters -> generation requests.

For every active ad, the Item-User Predictor scores the ad's item embedding against the
cluster centroids (HLLM-Creator §3.5). The top `match.query_aware_top` clusters get one
query-aware request per each of the ad's top `match.queries_per_ad` search queries; the top
`match.query_free_top` clusters get a query-free request. The predictor is an MLP-Mixer
over the (centroid, item) pair, so it re-ranks the `match.candidates` clusters nearest the
ad by cosine (the User LLM is trained to place a user near the items it clicks next); with
`candidates: 0` it scores every cluster.

`request_id` = hash(ad content hash, cluster id, centroid version, strategy, query,
Creative LLM version): a request whose id was generated before is reused by `generate`.
Writes `{lake}/cycles/{cycle_id}/match_ads/`:

    generation_requests.parquet   one row per request (DESIGN.md contract)
    ad_issues.parquet             ads skipped (no item embedding) or flagged (no selling points,
                                  no search query) with the action taken
    coverage.parquet              per category: users whose cluster gets at least one request
    _SUCCESS                      requests per strategy, ads matched/skipped, work saved
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs.platform.config import Config
from jobs.platform.devices import pick_device
from jobs.platform.errors import UserError
from jobs.platform.lake import StageOutput, fingerprint_code, read_manifest, run_stage, stage_dir
from jobs.platform.registry import CREATOR, HLLM, artifact_version, require_artifact
from jobs.stages.point_plan import cycle_planner
from models.predictor import ItemUserPredictor

STAGE = "match_ads"
QUERY_AWARE, QUERY_FREE = "query_aware", "query_free"
log = logging.getLogger(__name__)

REQUEST_SCHEMA = pa.schema([
    ("request_id", pa.string()), ("ad_id", pa.string()), ("advertiser_id", pa.string()),
    ("ad_content_hash", pa.string()), ("title", pa.string()),
    ("selling_points", pa.list_(pa.string())), ("brand", pa.string()), ("category", pa.string()),
    ("cluster_id", pa.int32()), ("cluster_rank", pa.int16()), ("strategy", pa.string()),
    ("query", pa.string()), ("score", pa.float32()), ("centroid_version", pa.string()),
    ("hllm_version", pa.string()), ("creator_version", pa.string()),
    ("plan", pa.list_(pa.string())),
])


def request_id(ad_content_hash: str, cluster_id: int, centroid_version: str, strategy: str,
               query: str | None, creator_version: str, plan: list[str] | None = None) -> str:
    parts = [ad_content_hash, int(cluster_id), centroid_version, strategy, query,
             creator_version]
    key = json.dumps(parts + [list(plan)] if plan else parts, ensure_ascii=False)
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def _matrix(table: pa.Table, column: str) -> np.ndarray:
    arr = table.column(column).combine_chunks()
    n = table.num_rows
    return np.array(arr.flatten(), dtype=np.float32).reshape(n, -1) if n else \
        np.zeros((0, 0), dtype=np.float32)


def score_clusters(predictor, items: np.ndarray, centroids: np.ndarray, top: int,
                   candidates: int, batch_size: int,
                   device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """(ranks (A, top) rows of `centroids`, scores (A, top) click probabilities), best first.
    items (A, d) ad embeddings; centroids (K, d). Ties break on the lower row. The
    predictor runs on `device` (cuda when present: scoring every cluster is cheap there)."""
    import torch

    n_ads, k = len(items), len(centroids)
    m = k if candidates <= 0 else min(candidates, k)
    top = min(top, m)
    if m < k:  # retrieval: the m clusters nearest each ad by cosine
        unit_i = items / np.linalg.norm(items, axis=1, keepdims=True)
        unit_c = centroids / np.linalg.norm(centroids, axis=1, keepdims=True)
        cos = unit_i @ unit_c.T  # (A, K)
        cand = np.argpartition(-cos, m - 1, axis=1)[:, :m]
        cand.sort(axis=1)
    else:
        cand = np.broadcast_to(np.arange(k), (n_ads, k))
    cand = np.ascontiguousarray(cand)  # (A, m) centroid rows
    pairs_item = np.repeat(np.arange(n_ads), m)
    pairs_cent = cand.reshape(-1)
    probs = np.empty(len(pairs_item), dtype=np.float32)
    predictor = predictor.to(device)
    it, ce = torch.from_numpy(items).to(device), torch.from_numpy(centroids).to(device)
    with torch.inference_mode():
        for s in range(0, len(probs), batch_size):
            i = torch.from_numpy(pairs_item[s:s + batch_size]).to(device)
            c = torch.from_numpy(pairs_cent[s:s + batch_size]).to(device)
            probs[s:s + batch_size] = torch.sigmoid(predictor(ce[c], it[i])).float().cpu().numpy()
    probs = probs.reshape(n_ads, m)
    order = np.lexsort((cand, -probs))[:, :top]  # by score, then by row
    return np.take_along_axis(cand, order, 1), np.take_along_axis(probs, order, 1)


def _load_inputs(cfg: Config, cycle_id: str) -> dict[str, Any]:
    manifests = {s: read_manifest(stage_dir(cfg.lake, cycle_id, s))
                 for s in ("extract_features", "embed_items", "cluster_users")}
    missing = [s for s, m in manifests.items() if m is None]
    if missing:
        raise UserError(f"cycle {cycle_id} needs {', '.join(missing)} first")
    return manifests


def match(cfg: Config, cycle_id: str, manifests: dict[str, dict], predictor, hllm_version: str,
          creator_version: str, out: Path) -> dict[str, Any]:
    """Score, pick clusters, write the requests, issues and coverage tables into `out`."""
    mc = cfg.match
    features, items_m, clusters_m = (manifests[s] for s in
                                     ("extract_features", "embed_items", "cluster_users"))
    ads = pq.read_table(features["outputs"]["active_ads"]["path"])
    queries = pq.read_table(features["outputs"]["ad_queries"]["path"]).to_pandas()
    emb = pq.read_table(items_m["outputs"]["item_embeddings"]["path"],
                        columns=["item_hash", "embedding"])
    cents = pq.read_table(clusters_m["outputs"]["centroids"]["path"])
    centroid_version = clusters_m["centroid_version"]
    if not cents.num_rows:
        raise UserError(f"{STAGE}: cluster_users of cycle {cycle_id} has no active cluster")

    # ads -> item embedding rows; ads without one are skipped with a reason
    pos = pc.index_in(ads.column("item_hash"), value_set=emb.column("item_hash"))
    row = np.asarray(pos.fill_null(-1), dtype=np.int64)
    ad_ids = ads.column("ad_id").to_pylist()
    sp_len = np.asarray(pc.fill_null(pc.list_value_length(ads.column("selling_points")), 0))
    query_lists = queries[queries.query_rank <= mc.queries_per_ad].sort_values(
        ["ad_id", "query_rank"]).groupby("ad_id")["query"].apply(list).to_dict()
    issues = ([(a, "no_item_embedding", "skipped") for a, r in zip(ad_ids, row, strict=True)
               if r < 0]
              + [(a, "no_selling_points", "generated_from_title_only")
                 for a, r, n in zip(ad_ids, row, sp_len, strict=True) if r >= 0 and n == 0]
              + [(a, "no_search_query", "query_free_only") for a, r in zip(ad_ids, row, strict=True)
                 if r >= 0 and mc.queries_per_ad and mc.query_aware_top and a not in query_lists])
    matched = np.flatnonzero(row >= 0)
    items = _matrix(emb, "embedding")[row[matched]] if len(matched) else np.zeros((0, 1))
    centroids = _matrix(cents, "centroid")
    cluster_ids = np.asarray(cents.column("cluster_id"), dtype=np.int32)
    top = max(mc.query_free_top, mc.query_aware_top)
    if len(matched):

        ranks, scores = score_clusters(predictor, items, centroids, top, mc.candidates,
                                       mc.batch_size, pick_device(cfg.hllm.device))
    else:
        log.warning("%s: cycle %s has no active ad with an item embedding: no requests",
                    STAGE, cycle_id)
        ranks = np.zeros((0, top), dtype=np.int64)
        scores = np.zeros((0, top), dtype=np.float32)

    cols: dict[str, list] = {f.name: [] for f in REQUEST_SCHEMA}
    ad = ads.take(pa.array(matched)).to_pylist() if len(matched) else []
    planner = cycle_planner(
        cfg, features, pq.read_table(clusters_m["outputs"]["assignments"]["path"],
                                     columns=["user_id", "cluster_id"]),
        dict(zip(cluster_ids.tolist(), centroids, strict=True))) if mc.plan_neighbours else None

    def add(a: dict, rank: int, c_row: int, score: float, strategy: str, query: str | None):
        cid = int(cluster_ids[c_row])
        plan = planner(a["title"], a["selling_points"], query, cid) if planner else []
        values = {
            "request_id": request_id(a["content_hash"], cid, centroid_version, strategy, query,
                                     creator_version, plan),
            "ad_id": a["ad_id"], "advertiser_id": a["advertiser_id"],
            "ad_content_hash": a["content_hash"], "title": a["title"],
            "selling_points": a["selling_points"] or [], "brand": a["brand"],
            "category": a["category"], "cluster_id": cid, "cluster_rank": rank + 1,
            "strategy": strategy, "query": query, "score": float(score),
            "centroid_version": centroid_version, "hllm_version": hllm_version,
            "creator_version": creator_version, "plan": plan}
        for k, v in values.items():
            cols[k].append(v)

    for i, a in enumerate(ad):
        for r in range(ranks.shape[1]):
            if r < mc.query_aware_top:
                for q in query_lists.get(a["ad_id"], []):
                    add(a, r, ranks[i, r], scores[i, r], QUERY_AWARE, q)
            if r < mc.query_free_top:
                add(a, r, ranks[i, r], scores[i, r], QUERY_FREE, None)
    requests = pa.table(cols, schema=REQUEST_SCHEMA)
    pq.write_table(requests, out / "generation_requests.parquet")
    pq.write_table(pa.table({"ad_id": [i[0] for i in issues], "reason": [i[1] for i in issues],
                             "action": [i[2] for i in issues]},
                            schema=pa.schema([("ad_id", pa.string()), ("reason", pa.string()),
                                              ("action", pa.string())])),
                   out / "ad_issues.parquet")
    coverage = _coverage(requests, cents, ads)
    pq.write_table(coverage, out / "coverage.parquet")

    n_users = int(sum(cents.column("size").to_pylist()))
    strategies = pc.value_counts(requests.column("strategy")).to_pylist() if len(requests) else []
    reasons: dict[str, int] = {}
    for _, reason, _ in issues:
        reasons[reason] = reasons.get(reason, 0) + 1
    per_pair = n_users * len(matched)
    summary = {
        "active_ads": ads.num_rows, "ads_matched": int(len(matched)),
        "ads_skipped": int(ads.num_rows - len(matched)), "ad_issues": reasons,
        "clusters": cents.num_rows, "users": n_users, "requests": requests.num_rows,
        "requests_by_strategy": {s["values"]: s["counts"] for s in strategies},
        "candidates_scored_per_ad": min(mc.candidates or cents.num_rows, cents.num_rows),
        "per_user_requests": per_pair,
        "work_saved_ratio": round(per_pair / requests.num_rows, 1) if requests.num_rows else None,
        "coverage_mean": round(float(np.mean(coverage.column("share").to_numpy())), 4)
        if coverage.num_rows else None}
    return {"summary": summary, "rows": {"generation_requests": requests.num_rows,
                                         "ad_issues": len(issues),
                                         "coverage": coverage.num_rows},
            "centroid_version": centroid_version}


def _coverage(requests: pa.Table, cents: pa.Table, ads: pa.Table) -> pa.Table:
    """Per category: the users whose cluster receives at least one request for an ad of it."""
    sizes = dict(zip(cents.column("cluster_id").to_pylist(), cents.column("size").to_pylist(),
                     strict=True))
    total = sum(sizes.values())
    covered: dict[str, set[int]] = {c: set() for c in set(ads.column("category").to_pylist())}
    for cat, cid in zip(requests.column("category").to_pylist(),
                        requests.column("cluster_id").to_pylist(), strict=True):
        covered[cat].add(cid)
    cats = sorted(covered)
    users = [sum(sizes[c] for c in covered[cat]) for cat in cats]
    return pa.table({"category": pa.array(cats, pa.string()),
                     "clusters_covered": pa.array([len(covered[c]) for c in cats], pa.int32()),
                     "users_covered": pa.array(users, pa.int64()),
                     "users_total": pa.array([total] * len(cats), pa.int64()),
                     "share": pa.array([u / total if total else 0.0 for u in users],
                                       pa.float64())})


def run(cfg: Config, cycle_id: str, force: bool = False,
        creator_version: str | None = None) -> dict[str, Any]:
    """The stage. `creator_version` defaults to the Creative LLM named by CURRENT."""
    manifests = _load_inputs(cfg, cycle_id)
    artifact = require_artifact(cfg, HLLM)
    hllm_version = artifact_version(artifact, HLLM)
    clusters_version = manifests["cluster_users"]["hllm_version"]
    if clusters_version != hllm_version:
        raise UserError(
            f"{STAGE}: cycle {cycle_id}'s clusters come from HLLM {clusters_version} but the "
            f"current HLLM is {hllm_version}: re-run embed_users and cluster_users with --force")
    creator_version = creator_version or artifact_version(require_artifact(cfg, CREATOR),
                                                          CREATOR)
    inputs = {s: {"finished_at": m["finished_at"], "outputs": m["outputs"]}
              for s, m in manifests.items()}
    inputs |= {"hllm_version": hllm_version, "creator_version": creator_version,
               "code": fingerprint_code(Path(__file__), Path(__file__).with_name("point_plan.py"))}

    def build(out: Path) -> StageOutput:
        predictor = ItemUserPredictor.load(artifact / "predictor").eval()
        result = match(cfg, cycle_id, manifests, predictor, hllm_version, creator_version, out)
        s = result["summary"]
        log.info("%s: %d requests for %d ads over %d clusters %s (%s× fewer than one per user)",
                 STAGE, s["requests"], s["ads_matched"], s["clusters"],
                 s["requests_by_strategy"], s["work_saved_ratio"])
        return StageOutput(
            {name: {"path": f"{name}.parquet", "rows": rows}
             for name, rows in result["rows"].items()},
            {"summary": s, "centroid_version": result["centroid_version"],
             "hllm_version": hllm_version, "creator_version": creator_version})

    return run_stage(cfg, cycle_id, STAGE, inputs=inputs, config_hash=cfg.section_hash("match"),
                     build=build, force=force)
