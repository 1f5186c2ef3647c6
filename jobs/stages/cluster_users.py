"""Stage 4, cluster_users: user embeddings -> k-means clusters with stable ids.

Centroids stay fixed between full refits, so a cluster id and its `centroid_version` keep
their meaning across cycles and earlier generation requests (whose `request_id` includes
the version) are reused. Every cycle assigns every user to the nearest centroid. A full
refit happens on the first cycle, every `cluster.refit_every_hours`, when the centroids
drifted past `cluster.refit_drift`, or when the embedding space changed (another HLLM
version, another dimension, metric or K). A refit warm-starts from the previous centroids
when the space is the same, and the new centroids are matched to the old ids with the
Hungarian assignment (by centroid distance in the same space, by shared users otherwise).

Privacy floor: a cluster with fewer than `cluster.min_cluster_size` users is merged into its
nearest active neighbour for this cycle; nothing downstream sees a user id. Writes
`{lake}/cycles/{cycle_id}/cluster_users/`:

    centroids.parquet     active clusters: cluster_id, centroid, size, drift, centroid_version
    assignments.parquet   user_id, cluster_id, distance, centroid_version (for serving)
    state.parquet         every fitted centroid (active or not): what the next cycle starts from
    rejected.parquet      users not clustered (non_finite, zero_vector) with the reason
    _SUCCESS              k requested/fitted/active, refit and its reason, merges, drift, sizes
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jobs.platform.config import Config
from jobs.platform.errors import UserError
from jobs.platform.lake import (
    StageOutput,
    fingerprint_code,
    parse_cycle_id,
    read_manifest,
    run_stage,
    stage_dir,
)

STAGE = "cluster_users"
log = logging.getLogger(__name__)


@dataclass
class Fit:
    """Centroids a cycle assigns users to. `centers` live in the fit space (unit vectors for
    cosine); `centroids` are the same directions at the members' scale, in the embedding
    space the predictor and the Creative LLM read."""

    ids: np.ndarray  # (K,) int32 cluster ids
    centers: np.ndarray  # (K, d) float32, fit space
    centroids: np.ndarray  # (K, d) float32, embedding space
    version: str
    fitted_cycle_id: str
    metric: str
    hllm_version: str


# ---------------------------------------------------------------- embeddings in, vectors out

def _fit_space(x: np.ndarray, metric: str) -> np.ndarray:
    if metric == "cosine":
        return x / np.linalg.norm(x, axis=1, keepdims=True)
    return x


def load_embeddings(path: Path, metric: str) -> tuple[pa.Array, np.ndarray, np.ndarray,
                                                      dict[str, int], pa.Table]:
    """All user embeddings in the fit space: (user_ids, X (N, d) float32 — unit rows for
    cosine, normalized in place to hold one copy —, norms (N,), rejected counts, rejected
    rows). Non-finite and zero vectors are rejected with a reason (no direction)."""
    table = pq.read_table(path, columns=["user_id", "embedding"])
    n = table.num_rows
    if n == 0:
        raise UserError(f"{STAGE}: no user embeddings in {path}; nothing to cluster")
    emb = table.column("embedding").combine_chunks()
    dim = len(emb[0])
    x = np.asarray(emb.flatten(), dtype=np.float32).reshape(n, dim)  # (N, d)
    finite = np.isfinite(x).all(axis=1)
    zero = finite & ~np.abs(x).any(axis=1)
    bad = ~finite | zero
    reason = np.where(~finite, "non_finite", "zero_vector")[bad]
    rejected = pa.table({"user_id": table.column("user_id").filter(pa.array(bad)),
                         "reason": pa.array(reason.tolist(), pa.string())})
    counts = {"non_finite": int((~finite).sum()), "zero_vector": int(zero.sum())}
    users = table.column("user_id").filter(pa.array(~bad)).combine_chunks()
    x = x[~bad]  # a writable copy; the Arrow buffers are released on return
    del table, emb
    norms = np.linalg.norm(x, axis=1)
    if metric == "cosine":
        x /= norms[:, None]
    return users, x, norms, counts, rejected


def assign_all(xf: np.ndarray, centers: np.ndarray, metric: str, batch: int) -> np.ndarray:
    """Nearest center row of every user, in batches (a (batch, K) distance block at a time)."""
    return np.concatenate([nearest(xf[s:s + batch], centers, metric)[0]
                           for s in range(0, len(xf), batch)]) if len(xf) else \
        np.zeros(0, dtype=np.int64)


def sum_by(labels: np.ndarray, values: np.ndarray, k: int) -> np.ndarray:
    """(k, ...) sums of `values` rows per label (a sparse product: fast at 1M rows)."""
    from scipy.sparse import csr_matrix

    onehot = csr_matrix((np.ones(len(labels), dtype=values.dtype),
                         (labels, np.arange(len(labels)))), shape=(k, len(labels)))
    # in the values' dtype: a float64 copy of 1M x 384 embeddings would cost 3 GB
    return np.asarray(onehot @ values.reshape(len(labels), -1), dtype=np.float64)


# ------------------------------------------------------------------------------ fitting

def _kmeans_sklearn(xf: np.ndarray, k: int, init: np.ndarray | None, cfg: Config) -> np.ndarray:
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    c = cfg.cluster
    if len(xf) > c.fit_sample:  # centroids from a uniform sample; every user is assigned
        rng = np.random.default_rng(c.seed)
        xf = xf[np.sort(rng.choice(len(xf), c.fit_sample, replace=False))]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        km = KMeans(k, init="k-means++" if init is None else init, n_init=1,
                    max_iter=c.max_iter, random_state=c.seed).fit(xf)
    for w in caught:  # e.g. fewer distinct points than K: the extra clusters end up empty
        log.warning("%s: k-means: %s", STAGE, w.message)
    return km.cluster_centers_.astype(np.float32)


def _kmeans_spark(path: Path, k: int, cfg: Config) -> np.ndarray:
    """MLlib KMeans over the embeddings parquet (k-means|| seeding; MLlib has no warm start,
    so stable ids come from the Hungarian matching alone)."""
    from pyspark.ml.clustering import KMeans
    from pyspark.ml.functions import array_to_vector
    from pyspark.sql import functions as F

    from jobs.platform.spark import spark_session

    spark = spark_session(cfg)
    df = (spark.read.parquet(str(path)).select(F.col("embedding"))
          .where(F.forall("embedding", lambda v: ~F.isnan(v) & (F.abs(v) < float("inf"))))
          .where(F.exists("embedding", lambda v: v != 0))  # as load_embeddings rejects
          .select(array_to_vector("embedding").alias("features")))
    km = KMeans(k=k, seed=cfg.cluster.seed, maxIter=cfg.cluster.max_iter,
                distanceMeasure="cosine" if cfg.cluster.metric == "cosine" else "euclidean")
    centers = np.asarray(km.fit(df).clusterCenters(), dtype=np.float32)
    return _fit_space(centers, cfg.cluster.metric)


def match_ids(new: np.ndarray, old: Fit | None, overlap: np.ndarray | None) -> np.ndarray:
    """Ids for the new centers: Hungarian assignment to the old ids, by center distance when
    the space is the same (`overlap` None), else by shared users (`overlap` (K_old, K_new)).
    Unmatched new centers get fresh ids above the old ones."""
    from scipy.optimize import linear_sum_assignment

    if old is None:
        return np.arange(len(new), dtype=np.int32)
    if overlap is None:
        cost = ((old.centers[:, None, :] - new[None, :, :]) ** 2).sum(-1)  # (K_old, K_new)
    else:
        cost = -overlap.astype(np.float64)
    rows, cols = linear_sum_assignment(cost)
    ids = np.full(len(new), -1, dtype=np.int64)
    ids[cols] = old.ids[rows]
    fresh = np.flatnonzero(ids < 0)
    ids[fresh] = int(old.ids.max()) + 1 + np.arange(len(fresh))
    return ids.astype(np.int32)


def _version(ids: np.ndarray, centers: np.ndarray, metric: str) -> str:
    h = hashlib.sha256(metric.encode() + ids.tobytes() + np.round(centers, 6).tobytes())
    return "c-" + h.hexdigest()[:12]


# --------------------------------------------------------------------------- assignment

def nearest(xf: np.ndarray, centers: np.ndarray, metric: str,
            allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(labels (N,) as rows of `centers`, distance (N,)): cosine distance 1 - cos for the
    cosine metric (xf, centers unit vectors), Euclidean distance otherwise."""
    if metric == "cosine":
        d = 1.0 - xf @ centers.T  # (N, K)
    else:
        d = ((xf ** 2).sum(1)[:, None] - 2 * xf @ centers.T + (centers ** 2).sum(1)[None, :])
    if allowed is not None:
        d[:, ~allowed] = np.inf
    labels = d.argmin(axis=1)
    dist = d[np.arange(len(d)), labels]
    if metric != "cosine":
        dist = np.sqrt(np.maximum(dist, 0))
    return labels, dist.astype(np.float32)


def privacy_merge(sizes: np.ndarray, centers: np.ndarray, floor: int) -> np.ndarray:
    """Row -> row it is merged into (itself when it stays). Repeatedly folds the smallest
    cluster under the floor into its nearest active neighbour, so no published cluster has
    fewer than `floor` users (unless all users fit in one, which the caller refuses)."""
    target = np.arange(len(sizes))
    size = sizes.astype(np.int64).copy()
    active = size > 0
    target[~active] = -1  # empty: nobody to merge
    dist = ((centers[:, None, :] - centers[None, :, :]) ** 2).sum(-1)  # (K, K)
    np.fill_diagonal(dist, np.inf)
    while active.sum() > 1:
        small = np.flatnonzero(active & (size < floor))
        if not len(small):
            break
        s = small[np.argmin(size[small])]
        others = np.where(active, dist[s], np.inf)
        others[s] = np.inf
        into = int(np.argmin(others))
        size[into] += size[s]
        size[s] = 0
        active[s] = False
        target[target == s] = into
        target[s] = into
    return target


def _batches(users: pa.Array, x: np.ndarray, batch: int):
    for start in range(0, len(x), batch):
        yield users[start:start + batch], x[start:start + batch]


# ------------------------------------------------------------------------- previous state

def previous_fit(cfg: Config, cycle_id: str) -> tuple[Fit | None, dict | None]:
    """The latest earlier cycle's fit (and manifest), or (None, None)."""
    committed = sorted(p.parent.parent.name for p in
                       (cfg.lake / "cycles").glob(f"*/{STAGE}/_SUCCESS"))
    earlier = [c for c in committed if c < cycle_id]
    if not earlier:
        return None, None
    folder = stage_dir(cfg.lake, earlier[-1], STAGE)
    manifest = read_manifest(folder)
    state = pq.read_table(folder / "state.parquet")
    n = state.num_rows

    def mat(col: str) -> np.ndarray:
        arr = state.column(col).combine_chunks()
        return np.asarray(arr.flatten(), dtype=np.float32).reshape(n, -1)

    return Fit(ids=np.asarray(state.column("cluster_id"), dtype=np.int32),
               centers=mat("center"), centroids=mat("centroid"),
               version=manifest["centroid_version"], fitted_cycle_id=manifest["fitted_cycle_id"],
               metric=manifest["metric"], hllm_version=manifest["hllm_version"]), manifest


def _drift(fit: Fit, xf: np.ndarray, labels: np.ndarray, metric: str) -> np.ndarray:
    """Per fitted row: how far the members' mean moved from the center (1 - cos for cosine,
    relative Euclidean distance otherwise); NaN for rows without members."""
    k, d = fit.centers.shape
    sums = sum_by(labels, xf, k)
    counts = np.bincount(labels, minlength=k)
    out = np.full(k, np.nan, dtype=np.float32)
    has = counts > 0
    mean = sums[has] / counts[has, None]
    c = fit.centers[has]
    if metric == "cosine":
        cos = (mean * c).sum(1) / (np.linalg.norm(mean, axis=1) * np.linalg.norm(c, axis=1))
        out[has] = 1.0 - cos
    else:
        out[has] = np.linalg.norm(mean - c, axis=1) / np.maximum(np.linalg.norm(c, axis=1), 1e-12)
    return out


def _refit_reason(cfg: Config, cycle_id: str, prev: Fit | None, prev_manifest: dict | None,
                  dim: int, hllm_version: str) -> str | None:
    if prev is None:
        return "first_fit"
    if prev.centers.shape[1] != dim:
        return f"dimension_changed ({prev.centers.shape[1]} -> {dim})"
    if prev.hllm_version != hllm_version:
        return f"hllm_model_changed ({prev.hllm_version} -> {hllm_version})"
    if prev.metric != cfg.cluster.metric:
        return f"metric_changed ({prev.metric} -> {cfg.cluster.metric})"
    if prev_manifest["summary"]["k_requested"] != cfg.cluster.k:
        return f"k_changed ({prev_manifest['summary']['k_requested']} -> {cfg.cluster.k})"
    age = parse_cycle_id(cycle_id) - parse_cycle_id(prev.fitted_cycle_id)
    if age >= timedelta(hours=cfg.cluster.refit_every_hours):
        return f"scheduled ({age.total_seconds() / 3600:.0f} h since the fit)"
    return None


def _overlap(prev_manifest: dict, users: pa.Array, labels: np.ndarray, old: Fit,
             k_new: int) -> np.ndarray | None:
    """(K_old, K_new) users shared by old cluster ids and new rows, from the previous
    cycle's assignments (None when it has none)."""
    path = Path(prev_manifest["outputs"]["assignments"]["path"])
    if not path.exists():
        return None
    import pyarrow.compute as pc

    prev = pq.read_table(path, columns=["user_id", "cluster_id"])
    pos = pc.index_in(users, value_set=prev.column("user_id").combine_chunks())
    idx = np.asarray(pos.fill_null(-1), dtype=np.int64)
    both = idx >= 0
    old_ids = np.asarray(prev.column("cluster_id"), dtype=np.int64)[idx[both]]
    row_of = {int(c): r for r, c in enumerate(old.ids)}
    old_rows = np.array([row_of.get(int(c), -1) for c in old_ids], dtype=np.int64)
    keep = old_rows >= 0
    overlap = np.zeros((len(old.ids), k_new), dtype=np.int64)
    np.add.at(overlap, (old_rows[keep], labels[both][keep]), 1)
    return overlap


def fit_or_reuse(cfg: Config, cycle_id: str, users: pa.Array, xf: np.ndarray,
                 norms: np.ndarray, embeddings_path: Path,
                 hllm_version: str) -> tuple[Fit, dict[str, Any]]:
    """This cycle's centroids: the previous ones, or a refit with ids matched to them.
    xf (N, d): users in the fit space; norms (N,): their embeddings' norms."""
    c = cfg.cluster
    n, dim = xf.shape
    k = max(1, min(c.k, n // c.min_cluster_size))
    if k < c.k:
        log.warning("%s: %d users allow at most %d clusters of at least %d users: K lowered "
                    "from %d to %d", STAGE, n, k, c.min_cluster_size, c.k, k)
    prev, prev_manifest = previous_fit(cfg, cycle_id)
    reason = _refit_reason(cfg, cycle_id, prev, prev_manifest, dim, hllm_version)
    info: dict[str, Any] = {"k_requested": c.k, "k_fitted": k,
                            "previous_cycle_id": prev_manifest["cycle_id"] if prev else None,
                            "previous_centroid_version": prev.version if prev else None}
    if reason is None:
        labels = assign_all(xf, prev.centers, c.metric, c.batch_size)
        drift = _drift(prev, xf, labels, c.metric)
        sizes = np.bincount(labels, minlength=len(prev.ids))
        mean_drift = float(np.nansum(drift * sizes) / max(sizes.sum(), 1))
        info["mean_drift"] = round(mean_drift, 6)
        if mean_drift < c.refit_drift:
            return prev, {**info, "refit": False, "refit_reason": None, "drift": drift}
        reason = f"drift ({mean_drift:.3f} >= {c.refit_drift})"
    log.info("%s: full refit of %d clusters (%s)", STAGE, k, reason)
    same_space = prev is not None and prev.centers.shape[1] == dim and \
        prev.hllm_version == hllm_version and prev.metric == c.metric
    init = prev.centers if same_space and len(prev.ids) == k else None  # warm start
    if c.engine == "spark":
        centers = _kmeans_spark(embeddings_path, k, cfg)
    else:
        centers = _kmeans_sklearn(xf, k, init, cfg)
    labels = assign_all(xf, centers, c.metric, c.batch_size)
    overlap = None
    if prev is not None and not same_space:
        overlap = _overlap(prev_manifest, users, labels, prev, k)
    ids = match_ids(centers, prev if (same_space or overlap is not None) else None, overlap)
    order = np.argsort(ids, kind="stable")
    ids, centers = ids[order], centers[order]
    labels = np.argsort(order)[labels]
    # centroid in the embedding space: the center's direction at the members' mean norm
    scale = np.bincount(labels, weights=norms, minlength=k) / np.maximum(
        np.bincount(labels, minlength=k), 1)
    centroids = centers * np.where(scale > 0, scale, 1.0)[:, None] if c.metric == "cosine" \
        else centers.copy()
    drift = np.full(k, np.nan, dtype=np.float32)
    if same_space:  # how far each kept id moved at this refit
        old_row = {int(i): r for r, i in enumerate(prev.ids)}
        for r, i in enumerate(ids):
            if int(i) in old_row:
                o = prev.centers[old_row[int(i)]]
                drift[r] = 1 - float(o @ centers[r]) if c.metric == "cosine" else float(
                    np.linalg.norm(o - centers[r]) / max(np.linalg.norm(o), 1e-12))
    fit = Fit(ids=ids, centers=centers.astype(np.float32),
              centroids=centroids.astype(np.float32), version=_version(ids, centers, c.metric),
              fitted_cycle_id=cycle_id, metric=c.metric, hllm_version=hllm_version)
    return fit, {**info, "refit": True, "refit_reason": reason, "drift": drift,
                 "matched_by": None if prev is None else ("centroids" if same_space else
                                                          "shared_users" if overlap is not None
                                                          else "none")}


# ---------------------------------------------------------------------------------- stage

def _vectors(m: np.ndarray) -> pa.FixedSizeListArray:
    return pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(m).reshape(-1)),
                                             m.shape[1])


def cluster(cfg: Config, cycle_id: str, embeddings_path: Path, hllm_version: str,
            out: Path) -> dict[str, Any]:
    """Fit (or reuse) centroids, assign every user, apply the privacy floor; write `out`."""
    c = cfg.cluster
    users, xf, norms, rejected_counts, rejected = load_embeddings(embeddings_path, c.metric)
    if len(xf) < c.min_cluster_size:
        raise UserError(f"{STAGE}: {len(xf)} users with usable embeddings, fewer than the "
                        f"privacy floor cluster.min_cluster_size={c.min_cluster_size}: no "
                        "cluster could be published")
    fit, info = fit_or_reuse(cfg, cycle_id, users, xf, norms, embeddings_path, hllm_version)
    drift = info.pop("drift")
    # pass 1: sizes on every fitted centroid, then the privacy merge (centroids stay fixed)
    sizes = np.zeros(len(fit.ids), dtype=np.int64)
    for _, xb in _batches(users, xf, c.batch_size):
        sizes += np.bincount(nearest(xb, fit.centers, c.metric)[0], minlength=len(fit.ids))
    target = privacy_merge(sizes, fit.centers, c.min_cluster_size)
    active = target == np.arange(len(target))
    merged = {int(fit.ids[r]): int(fit.ids[target[r]]) for r in np.flatnonzero(
        (target >= 0) & ~active)}
    # pass 2: final assignment among active centroids (a merged cluster's users go to the
    # cluster it merged into; its other users keep their nearest)
    schema = pa.schema([("user_id", pa.string()), ("cluster_id", pa.int32()),
                        ("distance", pa.float32()), ("centroid_version", pa.string())])
    final_sizes = np.zeros(len(fit.ids), dtype=np.int64)
    with pq.ParquetWriter(out / "assignments.parquet", schema) as writer:
        for ub, xb in _batches(users, xf, c.batch_size):
            labels, _ = nearest(xb, fit.centers, c.metric)
            labels = target[labels]
            dist = (1.0 - (xb * fit.centers[labels]).sum(1)) if c.metric == "cosine" else \
                np.linalg.norm(xb - fit.centers[labels], axis=1)
            final_sizes += np.bincount(labels, minlength=len(fit.ids))
            writer.write_table(pa.table({
                "user_id": ub, "cluster_id": pa.array(fit.ids[labels], pa.int32()),
                "distance": pa.array(dist.astype(np.float32)),
                "centroid_version": pa.array([fit.version] * len(ub), pa.string())},
                schema=schema))
    keep = np.flatnonzero(final_sizes > 0)
    pq.write_table(pa.table({
        "cluster_id": pa.array(fit.ids[keep], pa.int32()),
        "centroid": _vectors(fit.centroids[keep]),
        "size": pa.array(final_sizes[keep], pa.int64()),
        "drift": pa.array(drift[keep], pa.float32()),
        "centroid_version": pa.array([fit.version] * len(keep), pa.string())}),
        out / "centroids.parquet")
    pq.write_table(pa.table({
        "cluster_id": pa.array(fit.ids, pa.int32()), "center": _vectors(fit.centers),
        "centroid": _vectors(fit.centroids)}), out / "state.parquet")
    pq.write_table(rejected, out / "rejected.parquet")
    sizes_active = final_sizes[keep]
    summary = {
        **info, "users": int(len(xf)), "rejected": rejected_counts,
        "k_active": int(len(keep)), "merged_into": merged,
        "size_min": int(sizes_active.min()), "size_median": float(np.median(sizes_active)),
        "size_max": int(sizes_active.max()),
        "mean_drift": info.get("mean_drift", round(float(np.nanmean(drift)), 6)
                               if np.isfinite(drift).any() else None)}
    return {"fit": fit, "summary": summary, "rows": {
        "centroids": len(keep), "assignments": int(len(xf)), "rejected": rejected.num_rows}}


def run(cfg: Config, cycle_id: str, force: bool = False) -> dict[str, Any]:
    users_manifest = read_manifest(stage_dir(cfg.lake, cycle_id, "embed_users"))
    if users_manifest is None:
        raise UserError(f"cycle {cycle_id} needs embed_users first")
    embeddings = Path(users_manifest["outputs"]["user_embeddings"]["path"])
    prev, prev_manifest = previous_fit(cfg, cycle_id)
    inputs = {"user_embeddings": users_manifest["outputs"]["user_embeddings"],
              "embed_users_finished": users_manifest["finished_at"],
              "previous": None if prev is None else {
                  "cycle_id": prev_manifest["cycle_id"],
                  "finished_at": prev_manifest["finished_at"]},
              "code": fingerprint_code(Path(__file__))}

    def build(out: Path) -> StageOutput:
        result = cluster(cfg, cycle_id, embeddings, users_manifest["model_version"], out)
        fit, summary = result["fit"], result["summary"]
        log.info("%s: %d users in %d clusters (version %s, refit: %s)", STAGE,
                 summary["users"], summary["k_active"], fit.version,
                 summary["refit_reason"] or "no")
        return StageOutput(
            {name: {"path": f"{name}.parquet", "rows": rows}
             for name, rows in result["rows"].items()},
            {"centroid_version": fit.version, "fitted_cycle_id": fit.fitted_cycle_id,
             "metric": fit.metric, "hllm_version": fit.hllm_version,
             "engine": cfg.cluster.engine, "summary": summary})

    return run_stage(cfg, cycle_id, STAGE, inputs=inputs,
                     config_hash=cfg.section_hash("cluster"), build=build, force=force)


def stability(before: Path, after: Path) -> dict[str, float]:
    """Share of the users in both assignment tables whose cluster id did not change."""
    a = pq.read_table(before, columns=["user_id", "cluster_id"]).to_pandas()
    b = pq.read_table(after, columns=["user_id", "cluster_id"]).to_pandas()
    both = a.merge(b, on="user_id", suffixes=("_before", "_after"))
    same = float((both.cluster_id_before == both.cluster_id_after).mean()) if len(both) else 0.0
    return {"users_in_both": int(len(both)), "kept_cluster_share": same}

