"""Shared fixtures: tiny sample data, configs pointing at temp folders, one Spark session."""

from __future__ import annotations

import json
import logging
import os
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from jobs.platform.config import load_config
from jobs.sample.sample_data import SampleSpec, generate

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
# py4j logs from __del__ at interpreter exit, after logging's streams are closed
logging.getLogger("py4j").setLevel(logging.WARNING)

TINY = SampleSpec(users=80, ads=40, seed=11, events_per_user=30)
CYCLE = "20261101T000000Z"  # the sample's clicks end at 2026-11-01T00:00:00Z


@pytest.fixture(scope="session", autouse=True)
def _stop_spark_at_exit():
    """Stop the shared Spark session before the interpreter tears logging down."""
    yield
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        active.stop()


@pytest.fixture(scope="session")
def tiny_sample(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sample") / "tiny"
    generate(TINY, out, progress=False)
    return out


def make_config(tmp: Path, ads: Path, clicks: Path, *overrides: str):
    return load_config(overrides=[
        f"lake={tmp / 'lake'}",
        f"inputs.ads={ads}",
        f"inputs.clicks={clicks}",
        f"airflow.home={tmp / 'airflow'}",
        "spark.master=local[2]",
        "spark.shuffle_partitions=2",
        *overrides,
    ], environ={})


@pytest.fixture
def config_for(tmp_path):
    def build(sample: Path, *overrides: str):
        return make_config(tmp_path, sample / "ads", sample / "clicks", *overrides)

    return build


def write_jsonl(path: Path, rows: list) -> Path:
    """Rows are dicts (written as JSON) or str/bytes (written verbatim, one per line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        for row in rows:
            if isinstance(row, dict):
                row = json.dumps(row)
            if isinstance(row, str):
                row = row.encode("utf-8")
            f.write(row + b"\n")
    return path


@pytest.fixture(scope="session")
def tiny_cycle(tmp_path_factory, tiny_sample):
    """extract_features on the tiny sample, once per test session: (config, manifest).
    HLLM settings are shrunk so training takes seconds."""
    from jobs.stages import extract_features

    tmp = tmp_path_factory.mktemp("cycle")
    cfg = make_config(
        tmp, tiny_sample / "ads", tiny_sample / "clicks",
        f"hllm.model_dir={tmp / 'models'}", f"hllm.cache_dir={tmp / 'cache'}",
        "hllm.train.epochs=2", "hllm.train.batch_size=16", "hllm.train.negatives=32",
        "hllm.user_llm.hidden_size=32", "hllm.user_llm.intermediate_size=64",
        "hllm.user_llm.num_heads=2", "hllm.user_llm.max_history=20",
        "hllm.predictor.width=64", "hllm.embed.user_shards=3", "hllm.embed.user_batch_size=16",
        "cluster.k=8", "cluster.min_cluster_size=5",
    )
    return cfg, extract_features.run(cfg, CYCLE)


def own_lake(tiny_cycle, tmp: Path):
    """The tiny cycle's config with a private lake (its extract_features output copied in)
    and a private HLLM model dir: tests that write later stages or train models do not
    step on each other through the session's shared lake."""
    import shutil

    from jobs.platform.lake import stage_dir

    cfg, _ = tiny_cycle
    own = cfg.model_copy(deep=True)
    own.lake = tmp / "lake"
    own.hllm.model_dir = tmp / "hllm"
    own.airflow.home = tmp / "airflow"
    shutil.copytree(stage_dir(cfg.lake, CYCLE, "extract_features"),
                    stage_dir(own.lake, CYCLE, "extract_features"), dirs_exist_ok=True)
    return own


TEST_CREATOR_VERSION = "creator-test"  # match_ads' request ids before a Creative LLM exists


@pytest.fixture(scope="session")
def matched_cycle(tiny_cycle, tmp_path_factory):
    """The tiny cycle through match_ads (a tiny HLLM trained on it): (config, manifests by
    stage). Requests carry TEST_CREATOR_VERSION as their Creative LLM version."""
    from jobs.platform.lake import read_manifest, stage_dir
    from jobs.stages import cluster_users, embed_items, embed_users, match_ads
    from jobs.training import train_hllm

    cfg = own_lake(tiny_cycle, tmp_path_factory.mktemp("matched"))
    features = read_manifest(stage_dir(cfg.lake, CYCLE, "extract_features"))
    train_hllm.train(cfg, CYCLE, progress=False)
    manifests = {"extract_features": features,
                 "embed_items": embed_items.run(cfg, CYCLE, progress=False),
                 "embed_users": embed_users.run(cfg, CYCLE, progress=False)}
    manifests["cluster_users"] = cluster_users.run(cfg, CYCLE)
    manifests["match_ads"] = match_ads.run(cfg, CYCLE, creator_version=TEST_CREATOR_VERSION)
    return cfg, manifests


class _Scripted(BaseHTTPRequestHandler):
    """An OpenAI-compatible /chat/completions on loopback that answers from a script."""

    script: list = []
    seen: list = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append(body)
        status, content = type(self).script.pop(0) if type(self).script else (200, "{}")
        payload = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                   "choices": [{"index": 0, "finish_reason": "stop",
                                "message": {"role": "assistant", "content": content}}]}
        data = json.dumps(payload if status == 200 else {"error": {"message": "boom"}}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def chat_server():
    server = HTTPServer(("127.0.0.1", 0), _Scripted)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Scripted.script, _Scripted.seen = [], []
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()
