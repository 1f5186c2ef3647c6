"""HLLM on the tiny sample: training (and resume), evaluation, embed_items cache, embed_users."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from jobs.evaluation.eval_hllm import train_and_evaluate
from jobs.evaluation.promotion import promote_hllm
from jobs.platform.errors import UserError
from jobs.platform.lake import latest_cycle_with, read_manifest
from jobs.platform.registry import CURRENT, HLLM, current_artifact, item_model_version
from jobs.stages import embed_items, embed_users
from jobs.training import train_hllm
from tests.conftest import CYCLE

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def trained(tiny_cycle):
    cfg, _ = tiny_cycle
    return cfg, train_and_evaluate(cfg, CYCLE, progress=False)


def test_training_writes_a_complete_versioned_artifact(trained):
    cfg, path = trained
    meta = json.loads((path / "hllm.json").read_text())
    assert path.name == meta["version"] and meta["version"].startswith("hllm-")
    for part in ("user_llm/decoder/config.json", "user_llm/decoder/model.safetensors",
                 "user_llm/heads.safetensors", "user_llm/user_llm.json",
                 "predictor/model.safetensors", "predictor/predictor.json", "item_llm.json"):
        assert (path / part).is_file(), part
    assert meta["training_data_hash"] and meta["seed"] == cfg.hllm.train.seed
    assert (cfg.hllm.model_dir / CURRENT).read_text().strip() == path.name
    assert current_artifact(cfg, HLLM) == path
    first, last = meta["loss_history"][0], meta["loss_history"][-1]
    assert last["loss"] < first["loss"]  # training moved
    m = meta["metrics"]
    for key in ("user_llm", "popularity", "item_knn"):
        assert 0 <= m[key]["recall@10"] <= 1 and 0 <= m[key]["ndcg@10"] <= m[key]["recall@10"]
    assert 0 <= m["predictor_auc"] <= 1


def test_training_is_deterministic_per_seed(trained, tmp_path):
    cfg, path = trained
    again = train_hllm.train(cfg, CYCLE, out_dir=tmp_path / "again", progress=False)
    a = json.loads((path / "hllm.json").read_text())
    b = json.loads((again / "hllm.json").read_text())
    assert a["version"] == b["version"]  # same data, seed and config: same weights


def test_a_killed_training_resumes_from_its_checkpoint(tiny_cycle, tmp_path, monkeypatch):
    cfg, _ = tiny_cycle
    cfg = cfg.model_copy(deep=True)
    cfg.hllm.model_dir = tmp_path / "models"
    cfg.hllm.train.checkpoint_every = 2
    real = train_hllm.batch_losses
    calls = {"n": 0}

    def dies_at_step_5(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(train_hllm, "batch_losses", dies_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        train_hllm.train(cfg, CYCLE, progress=False)
    ckpts = list(cfg.hllm.model_dir.glob(".training-*/checkpoint.pt"))
    assert len(ckpts) == 1
    monkeypatch.setattr(train_hllm, "batch_losses", real)
    resumed = train_hllm.train(cfg, CYCLE, progress=False)
    uninterrupted = train_hllm.train(cfg, CYCLE, out_dir=tmp_path / "straight", resume=False,
                                     progress=False)
    meta = json.loads((resumed / "hllm.json").read_text())
    straight = json.loads((uninterrupted / "hllm.json").read_text())
    assert meta["steps"] == straight["steps"]
    assert meta["version"] == straight["version"]  # bit-identical weights after the resume
    assert not list(cfg.hllm.model_dir.glob(".training-*"))  # work dir cleaned up


def test_embed_items_uses_the_cache(trained):
    cfg, _ = trained
    first = embed_items.run(cfg, CYCLE, force=True, progress=False)
    assert first["embedded"] == 0  # training already embedded every item through the cache
    assert first["from_cache"] == first["outputs"]["item_embeddings"]["rows"] + \
        first["outputs"]["rejected"]["rows"]
    table = pq.read_table(first["outputs"]["item_embeddings"]["path"])
    emb = np.stack(table.column("embedding").to_numpy(zero_copy_only=False))
    assert emb.shape[1] == 384 and np.isfinite(emb).all()
    assert set(table.column("item_model_version").to_pylist()) == {first["item_model_version"]}
    assert embed_items.run(cfg, CYCLE, progress=False)["skipped"] is True


def test_embed_items_only_embeds_new_texts(trained, tmp_path):
    import pyarrow as pa

    cfg, _ = trained
    items = tmp_path / "items.parquet"
    pq.write_table(pa.table({"item_hash": ["0123456789abcdef", "fedcba9876543210"],
                             "item_text": ["Brand New Gadget | Nuvix | electronics", "   "]}),
                   items)
    result = embed_items.embed_items(cfg, items, progress=False)
    assert result["embedded"] == 2
    assert result["rejected"] == [("fedcba9876543210", "empty_text")]
    again = embed_items.embed_items(cfg, items, progress=False)
    assert again["embedded"] == 0 and again["from_cache"] == 2


def test_embed_users_in_shards(trained):
    cfg, _ = trained
    embed_items.run(cfg, CYCLE, progress=False)
    shard0 = embed_users.run_shard(cfg, CYCLE, 0, progress=False)
    assert embed_users.run_shard(cfg, CYCLE, 0, progress=False)["skipped"] is True
    with pytest.raises(UserError, match="shards \\[1, 2\\] have not run"):
        embed_users.commit(cfg, CYCLE)
    m = embed_users.run(cfg, CYCLE, progress=False)
    counts = m["counts"]
    seqs = pq.read_table(Path(m["path"]).parent / "extract_features" / "user_sequences")
    assert counts["users"] == seqs.num_rows
    assert counts["embedded"] + counts["skipped_empty_history"] + \
        counts["rejected_non_finite"] == counts["users"]
    assert shard0["users"] < counts["users"]  # shards split the users
    out = pq.read_table(m["path"])
    assert out.num_rows == counts["embedded"] == m["outputs"]["user_embeddings"]["rows"]
    assert len(set(out.column("user_id").to_pylist())) == out.num_rows
    emb = np.stack(out.column("embedding").to_numpy(zero_copy_only=False))
    assert emb.shape[1] == 384 and np.isfinite(emb).all()
    assert max(out.column("history_used").to_pylist()) <= cfg.hllm.user_llm.max_history
    assert counts["truncated_histories"] > 0
    assert embed_users.commit(cfg, CYCLE)["skipped"] is True


def test_embed_users_rerun_computes_nothing_and_force_replaces_it(trained, monkeypatch):
    cfg, _ = trained
    embed_items.run(cfg, CYCLE, progress=False)
    before = embed_users.run(cfg, CYCLE, progress=False)
    final = Path(before["path"])
    real = embed_users._embed_shard

    def must_not_run(*args, **kwargs):
        raise AssertionError("a shard of a committed, up-to-date stage ran")

    monkeypatch.setattr(embed_users, "_embed_shard", must_not_run)
    for shard in range(cfg.hllm.embed.user_shards):  # what Airflow's mapped tasks do
        assert embed_users.run_shard(cfg, CYCLE, shard, progress=False)["skipped"] is True
    assert embed_users.commit(cfg, CYCLE)["skipped"] is True
    monkeypatch.setattr(embed_users, "_embed_shard", real)

    old = {p.name: p.stat().st_ino for p in final.glob("shard-*.parquet")}
    forced = embed_users.run(cfg, CYCLE, force=True, progress=False)
    assert forced["skipped"] is False and forced["finished_at"] != before["finished_at"]
    assert read_manifest(final)["finished_at"] == forced["finished_at"]  # the new _SUCCESS
    new = {p.name: p.stat().st_ino for p in final.glob("shard-*.parquet")}
    assert new.keys() == old.keys() and all(new[k] != old[k] for k in new)  # new files
    assert forced["counts"]["embedded"] == before["counts"]["embedded"]  # same model and data
    assert not list(final.parent.glob(".embed_users.shards-*"))  # no work folder left


def test_embed_users_needs_a_trained_model(tiny_cycle, tmp_path):
    cfg, _ = tiny_cycle
    cfg = cfg.model_copy(deep=True)
    cfg.hllm.model_dir = tmp_path / "none"
    embed_items.run(cfg, CYCLE, progress=False)
    with pytest.raises(UserError, match="no trained HLLM"):
        embed_users.run_shard(cfg, CYCLE, 0, progress=False)


def test_the_item_llm_can_be_trained_end_to_end(tiny_cycle, tmp_path):
    cfg, _ = tiny_cycle
    cfg = cfg.model_copy(deep=True)
    cfg.hllm.model_dir = tmp_path / "models"
    cfg.hllm.item_llm.train_encoder = True
    cfg.hllm.train.epochs = 1
    path = train_and_evaluate(cfg, CYCLE, progress=False)
    assert (path / "item_llm" / "config.json").is_file()  # the tuned encoder, HF format
    base = cfg.model_copy(deep=True)
    base.hllm.item_llm.train_encoder = False
    assert item_model_version(cfg, path) != item_model_version(base)  # its own cache key
    meta = json.loads((path / "hllm.json").read_text())
    assert 0 <= meta["metrics"]["user_llm"]["recall@10"] <= 1


def test_promotion_keeps_the_better_version(trained, tmp_path):
    cfg, current = trained
    assert latest_cycle_with(cfg.lake, "extract_features") == CYCLE
    worse = tmp_path / "worse"
    weak = cfg.model_copy(deep=True)
    weak.hllm.train.epochs = 1
    weak.hllm.train.lr = 1e-6  # barely trained: cannot beat the current version ...
    weak.hllm.user_llm.history_skip = False  # ... nor lean on the mean of the history
    train_hllm.train(weak, CYCLE, out_dir=worse, progress=False)
    decision = promote_hllm(cfg, worse, CYCLE)
    assert decision["promoted"] is False
    assert (decision["candidate_scores"]["recall@10"]
            < decision["current_scores"]["recall@10"])
    assert current_artifact(cfg, HLLM) == current
    assert json.loads((worse / "promotion.json").read_text()) == decision
    same = promote_hllm(cfg, current, CYCLE)  # as good as itself: promoted
    assert same["promoted"] is True and current_artifact(cfg, HLLM) == current


def test_history_slots_keep_recent_known_items_left_padded():
    import pyarrow as pa

    from jobs.stages.embed_users import history_slots

    known = pa.array(["a", "b", "c", "d"])
    histories = pa.array([["a", "x", "b"], ["x", "y"], ["a", "b", "c", "d", "a"], []],
                         pa.list_(pa.string()))
    slots, stats = history_slots(histories, known, max_history=3)
    assert slots.tolist() == [[-1, 0, 1], [-1, -1, -1], [2, 3, 0], [-1, -1, -1]]
    assert stats == {"users": 4, "unknown_items_dropped": 3, "skipped_empty_history": 2,
                     "truncated_histories": 1}


def test_eval_command_reports_all_rankers(trained):
    from typer.testing import CliRunner

    from jobs.entrypoints.cli import app

    cfg, path = trained
    result = CliRunner().invoke(app, [
        "eval", "hllm", "--cycle-id", CYCLE, "--set", f"lake={cfg.lake}",
        "--set", f"hllm.model_dir={cfg.hllm.model_dir}",
        "--set", f"hllm.cache_dir={cfg.hllm.cache_dir}",
        "--set", f"hllm.user_llm.max_history={cfg.hllm.user_llm.max_history}"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index('{\n  "model"'):])  # after logs
    assert report["model"] == str(path)
    stored = json.loads((path / "hllm.json").read_text())["metrics"]
    assert report["user_llm"] == stored["user_llm"]  # same data, same model, same numbers
    assert {"popularity", "item_knn", "predictor_auc"} <= set(report)
