"""Airflow cluster policy for Creative Factory on Kubernetes (KubernetesExecutor).

Tasks in the Airflow pool `gpu` (embed_items, embed_users shards, generate shards) get a
`pod_override`: the GPU worker image, a GPU node selector, a toleration for the GPU nodes'
taint and `nvidia.com/gpu` resources. Every other task keeps the chart's default worker pod.
The DAGs stay deployment-agnostic: they only name the pool.

The Helm values (infra/helm/values.yaml) carry this file as `airflowLocalSettings`, so the
chart mounts it as `$AIRFLOW_HOME/config/airflow_local_settings.py` in every Airflow
component; the policy runs where DAGs are parsed (the dag-processor) and the override is
stored with the serialized DAG. Settings come from the environment (the chart's `env`):

    CF_GPU_IMAGE          image of the GPU task pods (default: the chart's worker image)
    CF_GPU_COUNT          GPUs per task pod (default 1)
    CF_GPU_NODE_SELECTOR  comma-separated key=value labels (default nvidia.com/gpu.present=true)
    CF_GPU_TOLERATIONS    comma-separated taint keys tolerated with NoSchedule (default nvidia.com/gpu)
    CF_GPU_CPU            CPU request (default 4)
    CF_GPU_MEMORY         memory request and limit (default 24Gi)

A task that already sets `executor_config["pod_override"]` is left as it is.
"""

from __future__ import annotations

import os

GPU_POOL = "gpu"


def _pairs(text: str) -> dict[str, str]:
    pairs = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"CF_GPU_NODE_SELECTOR: expected key=value, got {item!r}")
        pairs[key.strip()] = value.strip()
    return pairs


def gpu_pod_override(environ: dict[str, str] | None = None):
    """The pod_override of a `gpu` pool task, from the CF_GPU_* settings."""
    from kubernetes.client import models as k8s

    env = os.environ if environ is None else environ
    gpus = env.get("CF_GPU_COUNT", "1")
    memory = env.get("CF_GPU_MEMORY", "24Gi")
    resources = k8s.V1ResourceRequirements(
        requests={"cpu": env.get("CF_GPU_CPU", "4"), "memory": memory, "nvidia.com/gpu": gpus},
        limits={"memory": memory, "nvidia.com/gpu": gpus},
    )
    tolerations = [
        k8s.V1Toleration(key=key.strip(), operator="Exists", effect="NoSchedule")
        for key in env.get("CF_GPU_TOLERATIONS", "nvidia.com/gpu").split(",")
        if key.strip()
    ]
    return k8s.V1Pod(
        spec=k8s.V1PodSpec(
            # "base" is the container the KubernetesExecutor runs the task in; the image of
            # a pod_override wins over the chart's worker image.
            containers=[k8s.V1Container(name="base", image=env.get("CF_GPU_IMAGE") or None,
                                        resources=resources)],
            node_selector=_pairs(env.get("CF_GPU_NODE_SELECTOR", "nvidia.com/gpu.present=true")),
            tolerations=tolerations,
        )
    )


def task_policy(task) -> None:
    if task.pool != GPU_POOL:
        return
    config = dict(task.executor_config or {})
    if "pod_override" not in config:
        config["pod_override"] = gpu_pod_override()
        task.executor_config = config
