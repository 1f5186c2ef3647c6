"""Shared set-up of the Creative LLM tests: the tiny cycle with a trained HLLM, user
embeddings, a built dataset and a trained (tiny) Creative LLM, made once per test session;
and fixture outputs of cluster_users / match_ads written through StageRun by their contracts."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jobs.platform.lake import StageRun, read_manifest, stage_dir
from tests.conftest import CYCLE

# Shrunk Creative LLM settings: training takes seconds on the tiny sample.
# The from-scratch Creative LLM: a test fixture for the plumbing (fast on CI), never the
# product default (a pretrained base, tests/models/test_base_model.py).
TINY_CREATOR = [
    "creator.model.base_model=null", "creator.train.lr=0.003", "creator.train.proj_lr=0.003",
    "creator.train.max_examples=null", "creator.model.max_prompt_tokens=128",
    "creator.model.max_title_tokens=40",
    "creator.model.vocab_size=600", "creator.model.hidden_size=64",
    "creator.model.num_layers=2", "creator.model.num_heads=2",
    "creator.model.intermediate_size=128", "creator.model.max_new_tokens=48",
    "creator.train.epochs=20", "creator.train.batch_size=16", "creator.train.warmup_steps=2",
    "creator.train.checkpoint_every=3", "creator.eval.max_examples=16", "creator.eval.ads=3",
    "creator.eval.clusters=3", "creator.dataset.eval_share=0.25", "creator.eval.backend=hf",
    "generate.backend=hf", "generate.shards=2", "generate.batch_size=16",
    "generate.process_per_shard=false", "generate.vllm.dtype=float32",
]
_CACHE: dict[str, object] = {}


def creator_config(tiny_cycle, tmp: Path, *overrides: str):
    """The tiny cycle's config with the Creative LLM paths under `tmp`."""
    from jobs.platform.config import load_config
    from tests.conftest import own_lake

    cfg = own_lake(tiny_cycle, tmp)
    base = [f"{k}={v}" for k, v in {
        "lake": cfg.lake, "inputs.ads": cfg.inputs.ads, "inputs.clicks": cfg.inputs.clicks,
        "airflow.home": cfg.airflow.home, "hllm.model_dir": cfg.hllm.model_dir,
        "hllm.cache_dir": cfg.hllm.cache_dir}.items()]
    hllm = [f"hllm.{k}" for k in ("train.epochs=2", "train.batch_size=16",
                                  "train.negatives=32", "user_llm.hidden_size=32",
                                  "user_llm.intermediate_size=64", "user_llm.num_heads=2",
                                  "user_llm.max_history=20", "predictor.width=64",
                                  "embed.user_shards=3", "embed.user_batch_size=16")]
    return load_config(overrides=base + hllm + ["spark.master=local[2]",
                                                "spark.shuffle_partitions=2",
                                                f"creator.model_dir={tmp / 'creator'}",
                                                f"creator.teacher.cache_dir={tmp / 'teacher'}",
                                                f"generate.cache_dir={tmp / 'generations'}",
                                                *TINY_CREATOR, *overrides], environ={})


def hllm_ready(cfg) -> None:
    """A trained HLLM, item and user embeddings for the tiny cycle (once per lake)."""
    if ("hllm", str(cfg.lake)) in _CACHE:
        return
    from jobs.platform.registry import HLLM, current_artifact
    from jobs.stages import embed_items, embed_users
    from jobs.training import train_hllm

    if current_artifact(cfg, HLLM) is None:
        train_hllm.train(cfg, CYCLE, progress=False)
    embed_items.run(cfg, CYCLE, progress=False)
    embed_users.run(cfg, CYCLE, progress=False)
    _CACHE[("hllm", str(cfg.lake))] = True


def trained_creator(tiny_cycle, tmp_factory):
    """(config, artifact path) of a Creative LLM trained on the tiny cycle."""
    if "creator" not in _CACHE:
        from jobs.evaluation.eval_creator import train_and_evaluate
        from jobs.training import build_dataset

        tmp = tmp_factory.mktemp("creator")
        cfg = creator_config(tiny_cycle, tmp)
        hllm_ready(cfg)
        build_dataset.run(cfg, CYCLE, progress=False)
        _CACHE["creator"] = (cfg, train_and_evaluate(cfg, CYCLE, progress=False))
    return _CACHE["creator"]


def write_cluster_and_match(cfg, cycle_id: str, creator_version: str, k: int = 3,
                            ads_limit: int = 6, drop_cluster: int | None = None,
                            empty: bool = False) -> dict:
    """Fixture outputs of cluster_users (centroids) and match_ads (generation_requests) that
    follow the DESIGN.md contracts, committed with StageRun. Centroids are the means of
    k groups of the cycle's user embeddings; each ad gets a query-free request for every
    cluster and a query-aware one for cluster 0 when it has a query. `drop_cluster` leaves
    one centroid out (its requests must fail with missing_centroid)."""
    from jobs.training.train_creator import load_user_embeddings

    users = read_manifest(stage_dir(cfg.lake, cycle_id, "embed_users"))
    feats = read_manifest(stage_dir(cfg.lake, cycle_id, "extract_features"))
    emb = np.stack(list(load_user_embeddings(
        users["outputs"]["user_embeddings"]["path"]).values()))
    groups = np.array_split(np.arange(len(emb)), k)
    cents = np.stack([emb[g].mean(0) for g in groups]).astype(np.float32)
    version = "centroids-test-" + hashlib.sha256(cents.tobytes()).hexdigest()[:8]
    keep = [c for c in range(k) if c != drop_cluster]
    centroids = pa.table({
        "cluster_id": pa.array(keep, pa.int32()),
        "centroid": pa.FixedSizeListArray.from_arrays(
            pa.array(cents[keep].reshape(-1), pa.float32()), cents.shape[1]),
        "size": pa.array([len(groups[c]) for c in keep], pa.int64()),
        "centroid_version": pa.array([version] * len(keep), pa.string())})
    stage = StageRun(cfg.lake, cycle_id, "cluster_users", {"fixture": version}, "test")
    out = stage.begin()
    pq.write_table(centroids, out / "centroids.parquet")
    stage.commit({"centroids": {"path": str(stage.final / "centroids.parquet"),
                                "rows": len(keep)}},
                 extra={"centroid_version": version, "hllm_version": "test"})

    from jobs.stages.match_ads import REQUEST_SCHEMA, request_id

    ads = pq.read_table(feats["outputs"]["active_ads"]["path"]).to_pylist()[:ads_limit]
    queries: dict[str, str] = {}
    for r in pq.read_table(feats["outputs"]["ad_queries"]["path"]).to_pylist():
        if r["query_rank"] == 1:
            queries[r["ad_id"]] = r["query"]
    rows = []
    for a in [] if empty else ads:
        plan = [(c, "query_free", None) for c in range(k)]
        if a["ad_id"] in queries:
            plan.append((0, "query_aware", queries[a["ad_id"]]))
        for rank, (c, strategy, q) in enumerate(plan, start=1):
            rows.append({
                "request_id": request_id(a["content_hash"], c, version, strategy, q,
                                         creator_version),
                "ad_id": a["ad_id"], "advertiser_id": a["advertiser_id"],
                "ad_content_hash": a["content_hash"], "title": a["title"],
                "selling_points": a["selling_points"], "brand": a["brand"],
                "category": a["category"], "cluster_id": c, "cluster_rank": rank,
                "strategy": strategy, "query": q, "score": 0.5,
                "centroid_version": version, "hllm_version": "test",
                "creator_version": creator_version})
    stage = StageRun(cfg.lake, cycle_id, "match_ads",
                     {"fixture": json.dumps([version, len(rows), creator_version])}, "test")
    out = stage.begin()
    pq.write_table(pa.Table.from_pylist(rows, REQUEST_SCHEMA), out / "generation_requests.parquet")
    stage.commit({"generation_requests": {"path": str(stage.final /
                                                      "generation_requests.parquet"),
                                          "rows": len(rows)}},
                 extra={"centroid_version": version, "creator_version": creator_version})
    return {"requests": rows, "centroid_version": version}
