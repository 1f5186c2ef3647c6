"""match_ads on the tiny cycle: requests, deterministic ids, issues, coverage, bad input."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.platform.errors import UserError
from jobs.platform.lake import StageRun, read_manifest, stage_dir
from jobs.stages import match_ads
from tests.conftest import CYCLE, TEST_CREATOR_VERSION

pytestmark = pytest.mark.spark


def test_requests_follow_the_contract(matched_cycle):
    cfg, m = matched_cycle
    req = pq.read_table(m["match_ads"]["outputs"]["generation_requests"]["path"])
    assert req.schema.equals(match_ads.REQUEST_SCHEMA)
    ads = pq.read_table(m["extract_features"]["outputs"]["active_ads"]["path"])
    n_clusters = m["cluster_users"]["outputs"]["centroids"]["rows"]
    issues = pq.read_table(m["match_ads"]["outputs"]["ad_issues"]["path"]).to_pylist()
    skipped = {i["ad_id"] for i in issues if i["action"] == "skipped"}
    df = req.to_pandas()
    free = df[df.strategy == "query_free"]
    # every matched ad: query-free requests for its top-5 clusters (fewer only with < 5 clusters)
    assert set(free.ad_id) == set(ads.column("ad_id").to_pylist()) - skipped
    assert (free.groupby("ad_id").size() == min(5, n_clusters)).all()
    assert (free.groupby("ad_id").cluster_id.nunique() == min(5, n_clusters)).all()
    # ranks are ordered by score; query-aware requests go to the top-1 cluster only
    for _, g in free.sort_values("cluster_rank").groupby("ad_id"):
        assert list(g.cluster_rank) == list(range(1, len(g) + 1))
        assert (np.diff(g.score.to_numpy()) <= 1e-7).all()
    aware = df[df.strategy == "query_aware"]
    assert len(aware) and (aware.cluster_rank == 1).all() and aware["query"].notna().all()
    assert (aware.groupby("ad_id").size() == 1).all()  # queries_per_ad = 1
    no_query = {i["ad_id"] for i in issues if i["reason"] == "no_search_query"}
    assert set(aware.ad_id) == set(free.ad_id) - no_query
    assert df.request_id.is_unique and df.score.between(0, 1).all()
    assert (df.creator_version == TEST_CREATOR_VERSION).all()
    assert (df.centroid_version == m["cluster_users"]["centroid_version"]).all()
    assert not {"user_id"} & set(df.columns)
    # every request carries its cluster's point plan: claims of the ad's own selling points
    for plan, points in zip(df.plan, df.selling_points, strict=True):
        assert all(any(c in p for p in points) for c in plan)
    assert free.plan.map(len).gt(0).mean() > 0.5
    summary = m["match_ads"]["summary"]
    assert summary["requests"] == len(df)
    assert summary["requests_by_strategy"] == {"query_free": len(free), "query_aware": len(aware)}
    assert summary["ads_matched"] + summary["ads_skipped"] == ads.num_rows
    assert summary["work_saved_ratio"] == round(
        summary["users"] * summary["ads_matched"] / len(df), 1)


def test_request_ids_are_deterministic_and_depend_on_every_part():
    base = ("h1", 3, "c-1", "query_free", None, "creator-1")
    rid = match_ads.request_id(*base)
    assert rid == match_ads.request_id(*base) and len(rid) == 32
    for i, other in enumerate(["h2", 4, "c-2", "query_aware", "shoes", "creator-2"]):
        changed = list(base)
        changed[i] = other
        assert match_ads.request_id(*changed) != rid
    # the plan is part of the request (an empty plan keeps the id a plan-less request had)
    assert match_ads.request_id(*base, []) == rid
    assert match_ads.request_id(*base, ["Lifetime warranty"]) != rid


def test_rerun_is_skipped_and_force_writes_the_same_requests(matched_cycle):
    cfg, m = matched_cycle
    path = m["match_ads"]["outputs"]["generation_requests"]["path"]
    before = pq.read_table(path)
    assert match_ads.run(cfg, CYCLE, creator_version=TEST_CREATOR_VERSION)["skipped"]
    again = match_ads.run(cfg, CYCLE, force=True, creator_version=TEST_CREATOR_VERSION)
    assert not again["skipped"] and pq.read_table(path).equals(before)
    # a new Creative LLM version is a new input: every request id changes
    other = match_ads.run(cfg, CYCLE, creator_version="creator-other")
    ids = set(pq.read_table(path).column("request_id").to_pylist())
    assert not ids & set(before.column("request_id").to_pylist()) and not other["skipped"]
    match_ads.run(cfg, CYCLE, creator_version=TEST_CREATOR_VERSION)


def test_coverage_counts_users_per_category(matched_cycle):
    _, m = matched_cycle
    cov = pq.read_table(m["match_ads"]["outputs"]["coverage"]["path"]).to_pandas()
    users = m["cluster_users"]["outputs"]["assignments"]["rows"]
    assert (cov.users_total == users).all() and cov.share.between(0, 1).all()
    assert (cov.users_covered <= cov.users_total).all() and cov.share.max() > 0


def test_scoring_all_clusters_equals_retrieval_when_candidates_cover_them():
    import torch

    from models.predictor import ItemUserPredictor, PredictorConfig

    torch.manual_seed(0)
    pred = ItemUserPredictor(PredictorConfig(dim=8, depth=1, width=16)).eval()
    rng = np.random.default_rng(0)
    items, cents = rng.normal(size=(30, 8)).astype(np.float32), rng.normal(size=(6, 8)).astype(
        np.float32)
    full = match_ads.score_clusters(pred, items, cents, top=3, candidates=0, batch_size=7)
    same = match_ads.score_clusters(pred, items, cents, top=3, candidates=6, batch_size=50)
    assert (full[0] == same[0]).all() and np.allclose(full[1], same[1])
    pruned = match_ads.score_clusters(pred, items, cents, top=3, candidates=4, batch_size=50)
    assert pruned[0].shape == (30, 3) and (np.diff(pruned[1], axis=1) <= 0).all()


def _copy_with_ads(cfg, tmp_path, m, ads: pa.Table):
    """Another lake whose extract_features has `ads` as active ads (other stages linked)."""
    cfg = cfg.model_copy(deep=True)
    cfg.lake = tmp_path / "lake"
    for name in ("embed_items", "cluster_users"):
        src = stage_dir(m[name]["path"].rsplit("/cycles/", 1)[0], CYCLE, name)
        dst = stage_dir(cfg.lake, CYCLE, name)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.symlink_to(src)
    st = StageRun(cfg.lake, CYCLE, "extract_features", {"test": 1}, "t")
    out = st.begin()
    pq.write_table(ads, out / "active_ads.parquet")
    queries = pq.read_table(m["extract_features"]["outputs"]["ad_queries"]["path"])
    pq.write_table(queries, out / "ad_queries.parquet")
    outputs = {"active_ads": {"path": str(st.final / "active_ads.parquet"), "rows": ads.num_rows},
               "ad_queries": {"path": str(st.final / "ad_queries.parquet"),
                              "rows": queries.num_rows}}
    for name in ("items", "user_sequences"):  # the point plan reads who clicked what
        outputs[name] = m["extract_features"]["outputs"][name]
    st.commit(outputs)
    return cfg


def test_ads_without_embedding_or_selling_points_are_reported(matched_cycle, tmp_path):
    cfg, m = matched_cycle
    ads = pq.read_table(m["extract_features"]["outputs"]["active_ads"]["path"]).slice(0, 4)
    rows = ads.to_pylist()
    rows[0]["item_hash"] = "0" * 16  # no embedding for this text
    rows[1]["selling_points"] = []
    cfg2 = _copy_with_ads(cfg, tmp_path, m, pa.Table.from_pylist(rows, schema=ads.schema))
    out = match_ads.run(cfg2, CYCLE, creator_version=TEST_CREATOR_VERSION)
    issues = pq.read_table(out["outputs"]["ad_issues"]["path"]).to_pylist()
    assert {"ad_id": rows[0]["ad_id"], "reason": "no_item_embedding", "action": "skipped"} in issues
    assert {"ad_id": rows[1]["ad_id"], "reason": "no_selling_points",
            "action": "generated_from_title_only"} in issues
    req = pq.read_table(out["outputs"]["generation_requests"]["path"]).to_pandas()
    assert rows[0]["ad_id"] not in set(req.ad_id) and rows[1]["ad_id"] in set(req.ad_id)
    assert out["summary"]["ads_skipped"] == 1 and out["summary"]["ads_matched"] == 3


def test_an_empty_active_ad_table_gives_no_requests(matched_cycle, tmp_path):
    cfg, m = matched_cycle
    ads = pq.read_table(m["extract_features"]["outputs"]["active_ads"]["path"]).slice(0, 0)
    out = match_ads.run(_copy_with_ads(cfg, tmp_path, m, ads), CYCLE,
                        creator_version=TEST_CREATOR_VERSION)
    assert out["outputs"]["generation_requests"]["rows"] == 0
    assert out["summary"]["requests"] == 0 and out["summary"]["work_saved_ratio"] is None


def test_missing_stages_and_a_missing_creative_llm_are_clear_errors(matched_cycle, tmp_path):
    cfg, _ = matched_cycle
    empty = cfg.model_copy(deep=True)
    empty.lake = tmp_path / "nothing"
    with pytest.raises(UserError, match="needs extract_features, embed_items, cluster_users"):
        match_ads.run(empty, CYCLE, creator_version="x")
    no_creator = cfg.model_copy(deep=True)
    no_creator.creator.model_dir = tmp_path / "no-creator"
    with pytest.raises(UserError, match="no trained Creative LLM"):
        match_ads.run(no_creator, CYCLE)
    assert read_manifest(stage_dir(empty.lake, CYCLE, "match_ads")) is None
