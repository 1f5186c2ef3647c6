"""Failure callback of the DAGs: one actionable summary per failed task, in the task log.

Cheap to import (the DAG files import it at parse time): no heavy modules, no I/O.
"""

from __future__ import annotations

import logging

log = logging.getLogger("creative_factory.alerts")

# task id -> the CLI command that re-runs that stage alone for one cycle
RERUN = {
    "extract_features": "extract-features", "extract_features_submit": "extract-features",
    "embed_items": "embed-items", "embed_users_shard": "embed-users --shard <N>",
    "embed_users": "embed-users", "cluster_users": "cluster-users", "match_ads": "match-ads",
    "generate_shard": "generate --shard <N>", "generate": "generate",
    "kill_badcases": "kill-badcases", "report": "report", "publish_library": "publish-library",
}


def failure_summary(context: dict) -> str:
    ti = context.get("ti") or context.get("task_instance")
    task_id = getattr(ti, "task_id", "?")
    dag_id = getattr(ti, "dag_id", "?")
    end = context.get("data_interval_end")
    cycle = end.strftime("%Y%m%dT%H%M%SZ") if end is not None else "<cycle_id>"
    exc = context.get("exception")
    reason = str(exc).splitlines()[0][:500] if exc else "see the task log"
    try_no = getattr(ti, "try_number", "?")
    rerun = RERUN.get(task_id)
    lines = [f"FAILED {dag_id}.{task_id} cycle={cycle} try={try_no}: {reason}"]
    if rerun:
        lines.append(f"  re-run this stage alone: creative-factory {rerun} --cycle-id {cycle} "
                     "[--force]")
    lines.append(f"  then clear the task in Airflow; runbook: docs/runbook.md#{task_id}")
    return "\n".join(lines)


def on_task_failure(context: dict) -> None:
    log.error("%s", failure_summary(context))
