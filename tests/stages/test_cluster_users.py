"""cluster_users: stable ids across cycles, the privacy floor, refits, bad embeddings."""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.platform.errors import UserError
from jobs.platform.lake import StageRun, read_manifest, stage_dir
from jobs.stages import cluster_users
from tests.conftest import make_config

C1, C2, C3 = "20261101T000000Z", "20261101T050000Z", "20261101T100000Z"


def blobs(n_users: int, k: int, dim: int = 16, seed: int = 0, spread: float = 0.05):
    """Users around k well separated directions: (user_ids, X (n, dim))."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, dim)) * 3
    labels = rng.integers(0, k, n_users)
    x = centers[labels] + rng.normal(scale=spread * 3, size=(n_users, dim))
    return [f"u{i:06d}" for i in range(n_users)], x.astype(np.float32)


def write_users(cfg, cycle_id: str, users: list[str], x: np.ndarray,
                model_version: str = "hllm-test") -> None:
    """An embed_users stage output that follows its contract."""
    stage = StageRun(cfg.lake, cycle_id, "embed_users", {"synthetic": cycle_id}, "t")
    out = stage.begin()
    pq.write_table(pa.table({
        "user_id": pa.array(users, pa.string()),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1]),
        "history_used": pa.array([10] * len(users), pa.int32()),
        "model_version": pa.array([model_version] * len(users))}), out / "shard-00000.parquet")
    stage.commit({"user_embeddings": {"path": str(stage.final), "rows": len(users)}},
                 extra={"model_version": model_version})


@pytest.fixture
def cfg(tmp_path):
    def build(*overrides):
        return make_config(tmp_path, tmp_path / "ads", tmp_path / "clicks",
                           "cluster.k=8", "cluster.min_cluster_size=5", *overrides)
    return build


def assignments(cfg, cycle_id):
    return pq.read_table(stage_dir(cfg.lake, cycle_id, "cluster_users") / "assignments.parquet")


def test_clusters_cover_every_user_and_respect_the_floor(cfg):
    c = cfg()
    users, x = blobs(400, 8)
    write_users(c, C1, users, x)
    m = cluster_users.run(c, C1)
    a = assignments(c, C1)
    assert a.num_rows == 400 and set(a.column("user_id").to_pylist()) == set(users)
    cents = pq.read_table(m["outputs"]["centroids"]["path"])
    sizes = dict(zip(cents.column("cluster_id").to_pylist(), cents.column("size").to_pylist(),
                     strict=True))
    assert sum(sizes.values()) == 400 and min(sizes.values()) >= 5
    counted = np.bincount(a.column("cluster_id").to_numpy(), minlength=max(sizes) + 1)
    assert {k: int(counted[k]) for k in sizes} == sizes
    assert m["summary"]["refit_reason"] == "first_fit" and m["summary"]["k_active"] == 8
    assert "user_id" not in cents.column_names
    # centroids live at the users' scale (the predictor and the Creative LLM read them)
    norms = np.linalg.norm(np.stack(cents.column("centroid").to_numpy(zero_copy_only=False)), axis=1)
    assert np.allclose(norms.mean(), np.linalg.norm(x, axis=1).mean(), rtol=0.2)
    # a re-run of the same cycle is skipped; a forced one writes the same result
    assert cluster_users.run(c, C1)["skipped"]
    again = cluster_users.run(c, C1, force=True)
    assert again["centroid_version"] == m["centroid_version"]
    assert assignments(c, C1).equals(a)


def test_ids_are_stable_between_cycles_and_on_refit(cfg):
    c = cfg()
    users, x = blobs(600, 8, seed=1)
    write_users(c, C1, users, x)
    first = cluster_users.run(c, C1)
    # 5% of users change: centroids and ids are kept, users are re-assigned
    rng = np.random.default_rng(2)
    changed = rng.choice(600, 30, replace=False)
    x2 = x.copy()
    x2[changed] = x[rng.permutation(changed)]
    write_users(c, C2, users, x2)
    second = cluster_users.run(c, C2)
    assert not second["summary"]["refit"]
    assert second["centroid_version"] == first["centroid_version"]
    kept = cluster_users.stability(stage_dir(c.lake, C1, "cluster_users") / "assignments.parquet",
                                   stage_dir(c.lake, C2, "cluster_users") / "assignments.parquet")
    assert kept["kept_cluster_share"] >= 0.9
    # a full refit (cadence reached) keeps the ids through the Hungarian matching
    c3 = cfg("cluster.refit_every_hours=1")
    write_users(c3, C3, users, x2)
    third = cluster_users.run(c3, C3)
    assert third["summary"]["refit"] and third["summary"]["refit_reason"].startswith("scheduled")
    assert third["summary"]["matched_by"] == "centroids"
    kept = cluster_users.stability(stage_dir(c.lake, C2, "cluster_users") / "assignments.parquet",
                                   stage_dir(c.lake, C3, "cluster_users") / "assignments.parquet")
    assert kept["kept_cluster_share"] >= 0.9


def test_shuffled_refit_matches_old_ids_by_shared_users(cfg):
    """A new HLLM version changes the embedding space: ids follow the users."""
    c = cfg()
    users, x = blobs(500, 6, seed=3)
    write_users(c, C1, users, x)
    cluster_users.run(c, C1)
    rotation = np.linalg.qr(np.random.default_rng(9).normal(size=(16, 16)))[0]
    y = (x @ rotation).astype(np.float32)  # the same groups in another space
    write_users(c, C2, users, y, model_version="hllm-other")
    m = cluster_users.run(c, C2)
    assert m["summary"]["refit_reason"].startswith("hllm_model_changed")
    assert m["summary"]["matched_by"] == "shared_users"
    kept = cluster_users.stability(stage_dir(c.lake, C1, "cluster_users") / "assignments.parquet",
                                   stage_dir(c.lake, C2, "cluster_users") / "assignments.parquet")
    assert kept["kept_cluster_share"] == 1.0


def test_previous_centroids_of_another_dimension_force_a_logged_refit(cfg, caplog):
    c = cfg()
    users, x = blobs(300, 4, dim=16)
    write_users(c, C1, users, x)
    cluster_users.run(c, C1)
    write_users(c, C2, users, blobs(300, 4, dim=24)[1])
    with caplog.at_level(logging.INFO, logger="jobs.stages.cluster_users"):
        m = cluster_users.run(c, C2)
    assert m["summary"]["refit_reason"] == "dimension_changed (16 -> 24)"
    assert "dimension_changed" in caplog.text


def test_k_larger_than_users_is_lowered_with_a_warning(cfg, caplog):
    c = cfg("cluster.k=256", "cluster.min_cluster_size=10")
    users, x = blobs(120, 4)
    write_users(c, C1, users, x)
    with caplog.at_level(logging.WARNING, logger="jobs.stages.cluster_users"):
        m = cluster_users.run(c, C1)
    assert m["summary"]["k_fitted"] == 12 and "K lowered from 256 to 12" in caplog.text
    sizes = pq.read_table(m["outputs"]["centroids"]["path"]).column("size").to_pylist()
    assert min(sizes) >= 10 and sum(sizes) == 120


def test_identical_embeddings_make_one_cluster(cfg):
    c = cfg()
    users = [f"u{i}" for i in range(50)]
    write_users(c, C1, users, np.ones((50, 8), dtype=np.float32))
    m = cluster_users.run(c, C1)
    cents = pq.read_table(m["outputs"]["centroids"]["path"])
    assert cents.column("size").to_pylist() == [50]


def test_non_finite_and_zero_vectors_are_rejected_with_a_reason(cfg):
    c = cfg()
    users, x = blobs(100, 2, dim=8)
    x[0, 3] = np.nan
    x[1, 0] = np.inf
    x[2] = 0
    write_users(c, C1, users, x)
    m = cluster_users.run(c, C1)
    rejected = pq.read_table(m["outputs"]["rejected"]["path"]).to_pylist()
    assert {r["user_id"]: r["reason"] for r in rejected} == {
        users[0]: "non_finite", users[1]: "non_finite", users[2]: "zero_vector"}
    assert m["outputs"]["assignments"]["rows"] + len(rejected) == 100


def test_too_few_users_for_the_privacy_floor_is_a_clear_error(cfg):
    c = cfg("cluster.min_cluster_size=50")
    users, x = blobs(30, 2)
    write_users(c, C1, users, x)
    with pytest.raises(UserError, match="fewer than the privacy floor"):
        cluster_users.run(c, C1)
    assert read_manifest(stage_dir(c.lake, C1, "cluster_users")) is None


def test_privacy_merge_folds_small_clusters_into_their_nearest_neighbour():
    centers = np.array([[0.0, 0], [1, 0], [10, 0], [11, 0]], dtype=np.float32)
    target = cluster_users.privacy_merge(np.array([3, 30, 40, 2]), centers, floor=5)
    assert target.tolist() == [1, 1, 2, 2]
    # chains resolve: 0 -> 1 and 1 -> 2 means 0 -> 2
    target = cluster_users.privacy_merge(np.array([1, 2, 40, 0]), centers, floor=5)
    assert target.tolist() == [2, 2, 2, -1]


def test_spark_engine_keeps_the_same_contract(cfg):
    c = cfg("cluster.engine=spark", "cluster.k=4")
    users, x = blobs(200, 4, seed=5)
    write_users(c, C1, users, x)
    m = cluster_users.run(c, C1)
    assert m["engine"] == "spark" and m["summary"]["k_active"] == 4
    a = assignments(c, C1).to_pandas()
    # the same groups whichever engine fitted them: a scheduled sklearn refit finds the
    # partition Spark found, and the Hungarian matching keeps Spark's ids
    sk = cfg("cluster.k=4", "cluster.refit_every_hours=1")
    write_users(sk, C2, users, x)
    m2 = cluster_users.run(sk, C2)
    assert m2["summary"]["refit"] and m2["summary"]["matched_by"] == "centroids"
    b = assignments(sk, C2).to_pandas()
    assert (a.sort_values("user_id").cluster_id.to_numpy()
            == b.sort_values("user_id").cluster_id.to_numpy()).all()
