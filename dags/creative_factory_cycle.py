"""The five-hour creative cycle. This file only wires tasks; the work is in jobs/."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import Asset, dag, task
from airflow.timetables.interval import DeltaDataIntervalTimetable

from jobs.entrypoints.airflow_callbacks import on_task_failure

LIBRARY = Asset(name="creative_factory_library", uri="creative-factory://library/LATEST")
GPU_POOL = "gpu"  # bounds embedding and generation tasks (create it: see docs/runbook.md)

DOC_MD = """
# creative_factory_cycle

Every five hours: turn click logs and the active ad library into personalized ad titles
per user cluster, filter them, and publish them as a versioned creative library
(DESIGN.md). On-call: docs/runbook.md.

| stage | what it does | output |
|---|---|---|
| `extract_features` | PySpark over raw `ads` and `clicks`: row rules, quarantine, GX suites (in-process `local[*]`, or `spark-submit` when `spark.master` is a cluster) | `{lake}/cycles/{cycle_id}/extract_features/` |
| `embed_items` | Item LLM embedding of every item text, cached per (model, text hash) — pool `gpu` | `…/embed_items/` |
| `ensure_hllm`, `ensure_creator` | the model versions in use (the default is trained on a machine without one) | `var/models/*/CURRENT` |
| `embed_users` | User LLM over each user's history, one mapped task per shard (pool `gpu`), then a commit | `…/embed_users/` |
| `cluster_users` | k-means with stable ids, privacy floor, user → cluster assignments | `…/cluster_users/` |
| `match_ads` | Item-User Predictor: top-1 cluster query-aware, top-5 query-free requests | `…/match_ads/` |
| `generate` | batched vLLM (or HF) generation, one mapped task per shard (pool `gpu`), reuse of earlier outputs | `…/generate/` |
| `kill_badcases` | rules: fabrication, numbers, places, brands, sensitive terms, format | `…/kill_badcases/` |
| `report` | HTML + Markdown cycle report with plots | `…/report/` |
| `publish_library` | GX gate, then the library version to S3, `manifest.json`, `LATEST` last | `s3://{bucket}/{prefix}/versions/{cycle_id}/` |

**cycle_id** comes from the data interval end (`YYYYMMDDTHHMMSSZ`): a retry writes the
same place, and a stage whose `_SUCCESS` manifest matches its inputs is skipped.
Bad data fails the task without retries, with the rule, the table and the count in the
message; quarantined rows are kept for inspection. A failed task logs a summary with the
command that re-runs that stage for that cycle. The library is an Asset
(`creative_factory_library`): downstream DAGs can be scheduled on it.
"""

default_args = {
    "owner": "creative-factory",
    "retries": 2,
    "retry_delay": timedelta(minutes=2),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=20),
    "execution_timeout": timedelta(hours=1),
    "on_failure_callback": on_task_failure,
}
CYCLE_ID = "{{ data_interval_end.strftime('%Y%m%dT%H%M%SZ') }}"


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
    @task.branch
    def spark_mode() -> str:
        from jobs.entrypoints.airflow_tasks import spark_mode_task

        return spark_mode_task()

    @task
    def extract_features(data_interval_end=None) -> dict:
        from jobs.entrypoints.airflow_tasks import extract_features_task

        return extract_features_task(data_interval_end)

    extract_features_submit = SparkSubmitOperator(
        task_id="extract_features_submit",
        application=str(Path(__file__).resolve().parents[1] / "jobs" / "entrypoints" / "spark_submit_main.py"),
        application_args=["extract-features", "--cycle-id", CYCLE_ID],
        conn_id="creative_factory_spark",
        name="creative-factory-extract-features",
        execution_timeout=timedelta(hours=2),
    )

    @task(pool=GPU_POOL, trigger_rule="none_failed_min_one_success")
    def embed_items(data_interval_end=None) -> dict:
        from jobs.entrypoints.airflow_tasks import embed_items_task

        return embed_items_task(data_interval_end)

    @task(pool=GPU_POOL, execution_timeout=timedelta(hours=3))
    def ensure_hllm(data_interval_end=None) -> dict:
        from jobs.entrypoints.airflow_tasks import ensure_hllm_task

        return ensure_hllm_task(data_interval_end)

    @task
    def plan_user_shards() -> list[int]:
        from jobs.entrypoints.airflow_tasks import plan_user_shards_task

        return plan_user_shards_task()

    @task(pool=GPU_POOL)
    def embed_users_shard(shard: int, data_interval_end=None) -> dict:
        from jobs.entrypoints.airflow_tasks import embed_users_shard_task

        return embed_users_shard_task(data_interval_end, shard)

    @task
    def embed_users(data_interval_end=None) -> dict:
        from jobs.entrypoints.airflow_tasks import embed_users_commit_task

        return embed_users_commit_task(data_interval_end)

    @task
    def cluster_users(data_interval_end=None) -> dict:
        from jobs.entrypoints.airflow_tasks import cluster_users_task

        return cluster_users_task(data_interval_end)

    @task(pool=GPU_POOL, execution_timeout=timedelta(hours=3))
    def ensure_creator(data_interval_end=None) -> dict:
        from jobs.entrypoints.airflow_tasks import ensure_creator_task

        return ensure_creator_task(data_interval_end)

    @task
    def match_ads(data_interval_end=None) -> dict:
        from jobs.entrypoints.airflow_tasks import match_ads_task

        return match_ads_task(data_interval_end)

    @task
    def plan_generate_shards(data_interval_end=None) -> list[int]:
        from jobs.entrypoints.airflow_tasks import plan_generate_shards_task

        return plan_generate_shards_task(data_interval_end)

    @task(pool=GPU_POOL, execution_timeout=timedelta(hours=2))
    def generate_shard(shard: int, data_interval_end=None) -> dict:
        from jobs.entrypoints.airflow_tasks import generate_shard_task

        return generate_shard_task(data_interval_end, shard)

    @task
    def generate(data_interval_end=None) -> dict:
        from jobs.entrypoints.airflow_tasks import generate_commit_task

        return generate_commit_task(data_interval_end)

    @task
    def kill_badcases(data_interval_end=None) -> dict:
        from jobs.entrypoints.airflow_tasks import kill_badcases_task

        return kill_badcases_task(data_interval_end)

    @task
    def report(data_interval_end=None) -> dict:
        from jobs.entrypoints.airflow_tasks import report_task

        return report_task(data_interval_end)

    @task(outlets=[LIBRARY])
    def publish_library(data_interval_end=None) -> dict:
        from jobs.entrypoints.airflow_tasks import publish_library_task

        return publish_library_task(data_interval_end)

    mode = spark_mode()
    features = extract_features()
    mode >> [features, extract_features_submit]
    items = embed_items()
    [features, extract_features_submit] >> items
    user_shards = plan_user_shards()
    items >> ensure_hllm() >> user_shards
    users = embed_users()
    embed_users_shard.expand(shard=user_shards) >> users
    clusters = cluster_users()
    requests = match_ads()
    users >> clusters >> ensure_creator() >> requests
    gen_shards = plan_generate_shards()
    requests >> gen_shards
    generations = generate()
    generate_shard.expand(shard=gen_shards) >> generations
    generations >> kill_badcases() >> report() >> publish_library()


dag = creative_factory_cycle()

if __name__ == "__main__":
    dag.test()
