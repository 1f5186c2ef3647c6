"""Model training, on demand or weekly. This file only wires tasks; the work is in jobs/."""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag, task

DOC_MD = """
# creative_factory_training

Trains the user-modeling models (HLLM: User LLM + Item-User Predictor, Item LLM frozen
or fine-tuned by config) on the features of one cycle, evaluates them on a last-click
hold-out, and promotes the new version to `CURRENT` only when its next-item Recall@10 is
at least the current version's on the same data.

Params: `cycle_id` (default: the latest cycle with committed features).

Still to land (issues): CoT training-data construction, Creative LLM training, and
promotion on grounding pass rate and personalization advantage.
"""


@dag(
    dag_id="creative_factory_training",
    schedule="@weekly",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "creative-factory", "retries": 1,
                  "retry_delay": timedelta(minutes=5), "retry_exponential_backoff": True,
                  "execution_timeout": timedelta(hours=6)},
    params={"cycle_id": Param(None, type=["null", "string"],
                              description="Cycle whose features to train on")},
    tags=["creative-factory", "training"],
    doc_md=DOC_MD,
)
def creative_factory_training():
    @task
    def train_hllm(params=None) -> dict:
        from jobs.airflow_tasks import train_hllm_task

        return train_hllm_task(params["cycle_id"])

    @task
    def promote_hllm(trained: dict) -> dict:
        from jobs.airflow_tasks import promote_hllm_task

        return promote_hllm_task(trained)

    promote_hllm(train_hllm())


dag = creative_factory_training()

if __name__ == "__main__":
    dag.test()
