"""End to end: `creative-factory run-cycle` drives `airflow dags test` on a tiny sample."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.platform.lake import read_manifest
from tests.conftest import write_jsonl

pytestmark = pytest.mark.e2e
CLI = str(Path(sys.executable).with_name("creative-factory"))
WHEN = "2026-11-01T00:00:00Z"
CYCLE = "20261101T000000Z"


def overlay(tmp: Path, ads: Path, clicks: Path) -> Path:
    cfg = tmp / "overlay.yaml"
    cfg.write_text(json.dumps({  # JSON is YAML
        "lake": str(tmp / "lake"),
        "inputs": {"ads": str(ads), "clicks": str(clicks)},
        "airflow": {"home": str(tmp / "airflow")},
        "spark": {"master": "local[2]", "shuffle_partitions": 2},
        "hllm": {"model_dir": str(tmp / "models"), "cache_dir": str(tmp / "cache"),
                 "train": {"epochs": 2}},
        "cluster": {"k": 8, "min_cluster_size": 5},
        # the from-scratch fixture model: the pretrained default has its own model-tier test
        "creator": {"model_dir": str(tmp / "creator"),
                    "teacher": {"cache_dir": str(tmp / "teacher")},
                    "model": {"base_model": None, "max_prompt_tokens": 128,
                              "max_title_tokens": 40, "max_new_tokens": 48},
                    # enough steps that the fixture copies titles and ends some of them
                    "train": {"epochs": 30, "lr": 0.003, "proj_lr": 0.003,
                              "max_examples": None, "batch_size": 32, "warmup_steps": 2},
                    "eval": {"max_examples": 20, "ads": 5, "clusters": 2, "backend": "hf"}},
        "generate": {"cache_dir": str(tmp / "generations"), "shards": 1},
        # the fixture model writes few good titles: the cycle-share gate (tested in
        # tests/stages/test_library.py) would refuse its cycles
        "library": {"embedded_dir": str(tmp / "s3"), "min_passing_share": 0.0,
                    "min_ads_covered_share": 0.0},
    }))
    return cfg


def run_cycle(cfg: Path) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, "run-cycle", "--config", str(cfg), "--logical-date", WHEN],
                          capture_output=True, text=True, timeout=600)


def test_cycle_through_airflow_then_rerun_skips(tmp_path, tiny_sample):
    cfg = overlay(tmp_path, tiny_sample / "ads", tiny_sample / "clicks")
    first = run_cycle(cfg)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    stage = tmp_path / "lake" / "cycles" / CYCLE / "extract_features"
    m = read_manifest(stage)
    assert m is not None and m["cycle_id"] == CYCLE
    assert str(stage) in first.stdout and "ran in" in first.stdout
    assert "user_sequences" in first.stdout
    assert (tmp_path / "airflow" / "airflow.db").is_file()  # SQLite metadata where configured
    cycle = stage.parent
    users = read_manifest(cycle / "embed_users")
    assert read_manifest(cycle / "embed_items")["outputs"]["item_embeddings"]["rows"] > 0
    assert users["shards"] == 4 and users["counts"]["embedded"] > 0  # four mapped shard tasks
    assert (tmp_path / "models" / "CURRENT").is_file()  # default HLLM trained on first run
    assert (tmp_path / "creator" / "CURRENT").is_file()  # and the default Creative LLM
    requests = read_manifest(cycle / "match_ads")["outputs"]["generation_requests"]["rows"]
    gen = read_manifest(cycle / "generate")
    generated, failed = gen["outputs"]["generations"]["rows"], gen["outputs"]["failed"]["rows"]
    assert requests > 0 and generated > 0 and generated + failed == requests
    # the small fixture model may ramble past its budget or into a dead end of the grounded
    # decoder: dropped with a reason, never cut
    assert set(gen["counts"]["failed_by_reason"]) <= {"over_length", "dead_end", "empty_output"}
    assert gen["backend"] == "vllm"  # the default engine, through Airflow
    kill = read_manifest(cycle / "kill_badcases")
    published = read_manifest(cycle / "publish_library")
    assert published["outputs"]["library"]["rows"] == kill["counts"]["passed"] > 0
    library = tmp_path / "s3" / "creative-library" / "creative-factory"
    assert (library / "LATEST").read_text() == CYCLE
    for name in ("manifest.json", "creatives.parquet", "report.html"):
        assert (library / "versions" / CYCLE / name).is_file(), name
    assert "report:" in first.stdout and "library: s3://creative-library/" in first.stdout

    second = run_cycle(cfg)
    assert second.returncode == 0, second.stdout[-3000:]
    assert "up to date, skipped" in second.stdout
    assert read_manifest(stage)["finished_at"] == m["finished_at"]


def test_bad_feed_fails_the_task_with_a_one_line_reason(tmp_path, tiny_sample):
    clicks = tmp_path / "clicks"
    write_jsonl(clicks / "c.jsonl", [{"user_id": "u1", "ad_id": "no-such-ad",
                                      "event_time": "2026-10-01T00:00:00Z",
                                      "event_type": "click"}])
    cfg = overlay(tmp_path, tiny_sample / "ads", clicks)
    proc = run_cycle(cfg)
    assert proc.returncode == 1
    assert "error: extract_features failed validation: table clicks: 1 of 1 rows quarantined" \
        in proc.stdout
    assert "unknown_ad=1" in proc.stdout
    assert proc.stderr.strip() == ""  # run-cycle itself prints no stack trace
    log = (tmp_path / "lake" / "cycles" / CYCLE / "airflow-dags-test.log").read_text()
    # the task log leads with the one-line reason (Airflow then adds its own failure report)
    first_error = next(line for line in log.splitlines() if "[error" in line)
    assert "extract_features failed validation: table clicks" in first_error
    finished = next(line for line in log.splitlines() if "DagRun Finished" in line)
    assert "state=failed" in finished
