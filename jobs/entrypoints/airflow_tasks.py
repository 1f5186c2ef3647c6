"""What the DAG tasks call: a thin layer between Airflow's context and the stage functions.

Kept apart from `dags/` so the DAG files only wire tasks; the DAG files import this module
inside their tasks, never at parse time. Bad data and bad config raise `AirflowFailException`
with the one-line message: a retry cannot fix them, and on-call reads the reason first.
Every task returns a pointer (paths and counts), never a table.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from jobs.evaluation import eval_creator, eval_hllm
from jobs.evaluation.promotion import promote_creator, promote_hllm
from jobs.platform.config import load_config
from jobs.platform.errors import UserError
from jobs.platform.lake import cycle_id_for, latest_cycle_with
from jobs.platform.registry import CREATOR, HLLM, artifact_version, current_artifact
from jobs.stages import (
    cluster_users,
    embed_items,
    embed_users,
    extract_features,
    generate,
    kill_badcases,
    match_ads,
    publish_library,
    report,
)
from jobs.training import build_dataset

log = logging.getLogger(__name__)


def _fail_fast(exc: UserError):
    from airflow.sdk.exceptions import AirflowFailException

    log.error("%s", exc)  # the one line on-call needs, before Airflow's own failure report
    return AirflowFailException(str(exc))


def _cycle_call(data_interval_end: datetime | None, fn: Callable[..., dict], **kwargs) -> dict:
    """Resolve config and cycle id, run `fn(cfg, cycle_id, **kwargs)`, map bad input."""
    try:
        if data_interval_end is None:
            raise UserError("this run has no data interval; trigger it with a logical date")
        cycle_id = cycle_id_for(data_interval_end)
        return {"cycle_id": cycle_id, **fn(load_config(), cycle_id, **kwargs)}
    except UserError as exc:
        raise _fail_fast(exc) from None


def _pointer(stage: str, manifest: dict[str, Any]) -> dict[str, Any]:
    rows = {k: v["rows"] for k, v in manifest["outputs"].items()}
    log.info("%s %s: %s %s", stage, "skipped (up to date)" if manifest["skipped"] else "done",
             manifest["path"], rows)
    return {"stage_path": manifest["path"], "skipped": manifest["skipped"], "rows": rows}


def extract_features_task(data_interval_end: datetime | None, force: bool = False) -> dict:
    return _cycle_call(data_interval_end, lambda cfg, cid: _pointer(
        "extract_features", extract_features.run(cfg, cid, force=force)))


def embed_items_task(data_interval_end: datetime | None) -> dict:
    return _cycle_call(data_interval_end, lambda cfg, cid: _pointer(
        "embed_items", embed_items.run(cfg, cid, progress=False)))


def ensure_hllm_task(data_interval_end: datetime | None) -> dict:
    """The HLLM version the cycle uses; on a machine without one, train the default on
    this cycle's features (the training DAG trains and promotes models in production)."""
    def ensure(cfg, cycle_id):
        artifact = current_artifact(cfg, HLLM)
        if artifact is None:
            log.warning("no trained HLLM in %s: training the default on cycle %s",
                        cfg.hllm.model_dir, cycle_id)
            artifact = eval_hllm.train_and_evaluate(cfg, cycle_id, progress=False)
        return {"model_version": artifact_version(artifact, HLLM), "path": str(artifact)}

    return _cycle_call(data_interval_end, ensure)


def plan_user_shards_task() -> list[int]:
    return list(range(load_config().hllm.embed.user_shards))


def embed_users_shard_task(data_interval_end: datetime | None, shard: int) -> dict:
    return _cycle_call(data_interval_end, lambda cfg, cid: {
        "shard": shard, **embed_users.run_shard(cfg, cid, shard, progress=False)})


def embed_users_commit_task(data_interval_end: datetime | None) -> dict:
    return _cycle_call(data_interval_end, lambda cfg, cid: _pointer(
        "embed_users", embed_users.commit(cfg, cid)))


def cluster_users_task(data_interval_end: datetime | None) -> dict:
    def stage(cfg, cycle_id):
        m = cluster_users.run(cfg, cycle_id)
        return {**_pointer("cluster_users", m), "centroid_version": m["centroid_version"],
                "summary": m["summary"]}

    return _cycle_call(data_interval_end, stage)


def match_ads_task(data_interval_end: datetime | None) -> dict:
    def stage(cfg, cycle_id):
        m = match_ads.run(cfg, cycle_id)
        return {**_pointer("match_ads", m), "summary": m["summary"]}

    return _cycle_call(data_interval_end, stage)


def spark_mode_task() -> str:
    """Which extract_features task runs: in-process for a local master, spark-submit to a
    cluster otherwise (the `creative_factory_spark` Airflow connection names the master)."""
    master = load_config().spark.master
    return "extract_features" if master.startswith("local") else "extract_features_submit"


def report_task(data_interval_end: datetime | None) -> dict:
    def stage(cfg, cycle_id):
        m = report.run(cfg, cycle_id)
        log.info("cycle report: %s", m["outputs"]["report_html"]["path"])
        return {**_pointer("report", m), "headline": m["headline"]}

    return _cycle_call(data_interval_end, stage)


def train_hllm_task(cycle_id: str | None) -> dict:
    """Train a new HLLM version (never promoted here: see promote_hllm_task)."""
    try:
        cfg = load_config()
        cycle_id = cycle_id or latest_cycle_with(cfg.lake, "extract_features")
        path = eval_hllm.train_and_evaluate(cfg, cycle_id, promote_if_none=False,
                                            progress=False)
    except UserError as exc:
        raise _fail_fast(exc) from None
    return {"cycle_id": cycle_id, "path": str(path)}


def embed_users_for_training_task(cycle_id: str) -> dict:
    """The cycle's user embeddings with the HLLM in use (skipped when already from it)."""
    try:
        return _pointer("embed_users", embed_users.run(load_config(), cycle_id, progress=False))
    except UserError as exc:
        raise _fail_fast(exc) from None


def promote_hllm_task(trained: dict) -> dict:
    try:
        return promote_hllm(load_config(), Path(trained["path"]), trained["cycle_id"])
    except UserError as exc:
        raise _fail_fast(exc) from None


# ----- Creative LLM: training DAG and the cycle's generate stage -----------------

def ensure_creator_task(data_interval_end: datetime | None) -> dict:
    """The Creative LLM version the cycle uses; on a machine without one, build the dataset
    and train the default on this cycle (the training DAG trains and promotes in production).
    Needs the cycle's embed_users (user embeddings are the training input U)."""
    def ensure(cfg, cycle_id):
        artifact = current_artifact(cfg, CREATOR)
        if artifact is None:
            log.warning("no trained Creative LLM in %s: training the default on cycle %s",
                        cfg.creator.model_dir, cycle_id)
            build_dataset.run(cfg, cycle_id, progress=False)
            artifact = eval_creator.train_and_evaluate(cfg, cycle_id, progress=False)
        return {"model_version": artifact_version(artifact, CREATOR), "path": str(artifact)}

    return _cycle_call(data_interval_end, ensure)


def build_dataset_task(cycle_id: str | None) -> dict:
    """CoT training data on a cycle (default: the latest with features)."""
    try:
        cfg = load_config()
        cycle_id = cycle_id or latest_cycle_with(cfg.lake, "extract_features")
        m = build_dataset.run(cfg, cycle_id, progress=False)
    except UserError as exc:
        raise _fail_fast(exc) from None
    return {"cycle_id": cycle_id, **_pointer("build_dataset", m), "counts": m["counts"]}


def train_creator_task(built: dict) -> dict:
    """Train a new Creative LLM version on the dataset's cycle (never promoted here)."""
    try:
        path = eval_creator.train_and_evaluate(load_config(), built["cycle_id"],
                                               promote_if_none=False, progress=False)
    except UserError as exc:
        raise _fail_fast(exc) from None
    return {"cycle_id": built["cycle_id"], "path": str(path)}


def promote_creator_task(trained: dict) -> dict:
    try:
        return promote_creator(load_config(), Path(trained["path"]), trained["cycle_id"])
    except UserError as exc:
        raise _fail_fast(exc) from None


def plan_generate_shards_task(data_interval_end: datetime | None = None) -> list[int]:
    """Shard numbers to map over (the data interval is accepted for symmetry: every shard
    runs, an empty one commits nothing but its counts)."""
    return list(range(load_config().generate.shards))


def generate_shard_task(data_interval_end: datetime | None, shard: int) -> dict:
    """One generation shard. With `generate.process_per_shard` (default) it runs in a child
    process, so the vLLM engine's processes end with it and never hold the task open."""
    def one(cfg, cycle_id):
        # a child process only when there may be work: it pays torch's import and the engine
        if cfg.generate.process_per_shard and not generate.is_committed(cfg, cycle_id):
            return {"shard": shard, **generate.run_shard_in_process([], cycle_id, shard)}
        return {"shard": shard, **generate.run_shard(cfg, cycle_id, shard, progress=False)}

    return _cycle_call(data_interval_end, one)


def generate_commit_task(data_interval_end: datetime | None) -> dict:
    def commit(cfg, cycle_id):
        m = generate.commit(cfg, cycle_id)
        return {**_pointer("generate", m), "counts": m["counts"]}

    return _cycle_call(data_interval_end, commit)


def kill_badcases_task(data_interval_end: datetime | None) -> dict:
    """The Badcase Killer over the cycle's generations; kill counts per reason returned."""
    def kill(cfg, cycle_id):
        m = kill_badcases.run(cfg, cycle_id, progress=False)
        return {**_pointer("kill_badcases", m), "counts": m["counts"],
                "kills_by_reason": m["kills_by_reason"]}

    return _cycle_call(data_interval_end, kill)


def publish_library_task(data_interval_end: datetime | None) -> dict:
    """Publish the passing variants as library version {cycle_id}: a failed Great
    Expectations gate fails at once (no retry, nothing published); S3 errors retry."""
    def publish(cfg, cycle_id):
        m = publish_library.run(cfg, cycle_id, progress=False)
        return {**_pointer("publish_library", m), "latest": m["latest_after"],
                "upload": m["upload"]}

    return _cycle_call(data_interval_end, publish)
