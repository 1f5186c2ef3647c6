"""Model training, on demand or weekly. This file only wires tasks; the work is in jobs/."""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag, task

from jobs.entrypoints.airflow_callbacks import on_task_failure

GPU_POOL = "gpu"

DOC_MD = """
# creative_factory_training

Builds the models the cycle uses, from the features of one cycle:

1. `build_dataset`: chain-of-thought training data (user interest profile -> interest-driven
   title -> hallucination filter), by the offline grounded teacher or an OpenAI-compatible
   endpoint (`creator.teacher`).
2. `train_hllm` -> `promote_hllm`: User LLM + Item-User Predictor; promoted to `CURRENT` only
   when next-item Recall@10 on the hold-out is at least the current version's.
3. `embed_users`: the cycle's user embeddings with the HLLM now in use (re-run only when
   the HLLM changed), so the Creative LLM trains in the space cycles will use.
4. `train_creator` -> `promote_creator`: Creative LLM with the generation, click
   classification, alignment and reconstruction losses; evaluated on held-out users and
   promoted only when its personalization advantage is at least the current version's and
   its grounding pass rate at most 2 points below it. The evaluation is kept beside the model.

Params: `cycle_id` (default: the latest cycle with committed features). A version that is
not promoted stays in its model directory; see docs/runbook.md to promote or revert.
"""


@dag(
    dag_id="creative_factory_training",
    schedule="@weekly",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "creative-factory", "retries": 1,
                  "retry_delay": timedelta(minutes=5), "retry_exponential_backoff": True,
                  "execution_timeout": timedelta(hours=6),
                  "on_failure_callback": on_task_failure},
    params={"cycle_id": Param(None, type=["null", "string"],
                              description="Cycle whose features to train on")},
    tags=["creative-factory", "training"],
    doc_md=DOC_MD,
)
def creative_factory_training():
    @task
    def build_dataset(params=None) -> dict:
        from jobs.entrypoints.airflow_tasks import build_dataset_task

        return build_dataset_task(params["cycle_id"])

    @task(pool=GPU_POOL)
    def train_hllm(built: dict) -> dict:
        from jobs.entrypoints.airflow_tasks import train_hllm_task

        return train_hllm_task(built["cycle_id"])

    @task
    def promote_hllm(trained: dict) -> dict:
        from jobs.entrypoints.airflow_tasks import promote_hllm_task

        return promote_hllm_task(trained)

    @task(pool=GPU_POOL)
    def embed_users(built: dict) -> dict:
        from jobs.entrypoints.airflow_tasks import embed_users_for_training_task

        return embed_users_for_training_task(built["cycle_id"])

    @task(pool=GPU_POOL)
    def train_creator(built: dict) -> dict:
        from jobs.entrypoints.airflow_tasks import train_creator_task

        return train_creator_task(built)

    @task
    def promote_creator(trained: dict) -> dict:
        from jobs.entrypoints.airflow_tasks import promote_creator_task

        return promote_creator_task(trained)

    built = build_dataset()
    promote_hllm(train_hllm(built)) >> embed_users(built) >> (trained := train_creator(built))
    promote_creator(trained)


dag = creative_factory_training()

if __name__ == "__main__":
    dag.test()
