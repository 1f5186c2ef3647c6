"""The five-hour creative cycle. This file only wires tasks; the work is in jobs/."""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag, task
from airflow.timetables.interval import DeltaDataIntervalTimetable

DOC_MD = """
# creative_factory_cycle

Every five hours: turn click logs and the active ad library into personalized ad titles
per user cluster and publish them as a versioned creative library (DESIGN.md).

| stage | what it does | output |
|---|---|---|
| `extract_features` | PySpark over raw `ads` and `clicks`: row rules, quarantine, GX suites | `{lake}/cycles/{cycle_id}/extract_features/` |
| `embed_items` | Item LLM embedding of every item text, cached per (model, text hash) | `…/embed_items/` |
| `ensure_hllm` | the HLLM version in use (trains the default on a machine without one) | `var/models/hllm/CURRENT` |
| `embed_users` | User LLM over each user's history, one mapped task per shard, then a commit | `…/embed_users/` |

Stages still to land (issues): cluster_users, match_ads, generate, kill_badcases,
publish_library, report.

**cycle_id** comes from the data interval end (`YYYYMMDDTHHMMSSZ`): a retry writes the
same place, and a stage whose `_SUCCESS` manifest matches its inputs is skipped.
Bad data fails the task without retries, with the rule, the table and the count in the
message; quarantined rows are kept for inspection. See docs/runbook.md.
"""

default_args = {
    "owner": "creative-factory",
    "retries": 2,
    "retry_delay": timedelta(minutes=2),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=20),
    "execution_timeout": timedelta(hours=1),
}


@dag(
    dag_id="creative_factory_cycle",
    schedule=DeltaDataIntervalTimetable(timedelta(hours=5)),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=default_args,
    tags=["creative-factory", "cycle"],
    doc_md=DOC_MD,
)
def creative_factory_cycle():
    @task
    def extract_features(data_interval_end=None) -> dict:
        from jobs.airflow_tasks import extract_features_task

        return extract_features_task(data_interval_end)

    @task
    def embed_items(data_interval_end=None) -> dict:
        from jobs.airflow_tasks import embed_items_task

        return embed_items_task(data_interval_end)

    @task
    def ensure_hllm(data_interval_end=None) -> dict:
        from jobs.airflow_tasks import ensure_hllm_task

        return ensure_hllm_task(data_interval_end)

    @task
    def plan_user_shards() -> list[int]:
        from jobs.airflow_tasks import plan_user_shards_task

        return plan_user_shards_task()

    @task
    def embed_users_shard(shard: int, data_interval_end=None) -> dict:
        from jobs.airflow_tasks import embed_users_shard_task

        return embed_users_shard_task(data_interval_end, shard)

    @task
    def embed_users(data_interval_end=None) -> dict:
        from jobs.airflow_tasks import embed_users_commit_task

        return embed_users_commit_task(data_interval_end)

    shards = plan_user_shards()
    user_shards = embed_users_shard.expand(shard=shards)
    extract_features() >> embed_items() >> ensure_hllm() >> shards
    user_shards >> embed_users()


dag = creative_factory_cycle()

if __name__ == "__main__":
    dag.test()
