"""Stage 2, embed_items: every item text of the cycle -> an Item LLM embedding.

Embeddings are cached by (Item LLM version, item_hash) under `hllm.cache_dir`, so an item
is embedded once per model version across all cycles: a cycle embeds only new or changed
texts. Writes `{lake}/cycles/{cycle_id}/embed_items/`:

    item_embeddings.parquet   item_hash, embedding (float32), text_tokens, item_model_version
    rejected.parquet          items not embedded, with the reason (empty_text, non_finite)
    _SUCCESS                  counts: items, from cache, newly embedded, rejected
"""

from __future__ import annotations

import logging
import os
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jobs.platform.config import Config
from jobs.platform.devices import pick_device
from jobs.platform.errors import UserError
from jobs.platform.lake import StageOutput, fingerprint_code, read_manifest, run_stage, stage_dir
from jobs.platform.registry import HLLM, current_artifact, item_model_version, load_item_llm

STAGE = "embed_items"
log = logging.getLogger(__name__)


def _read_cache(folder: Path) -> dict[str, tuple[np.ndarray, int]]:
    cache: dict[str, tuple[np.ndarray, int]] = {}
    if not folder.is_dir():
        return cache
    for part in sorted(folder.glob("part-*.parquet")):
        t = pq.read_table(part)
        emb = t.column("embedding").to_pylist()
        for h, e, n in zip(t.column("item_hash").to_pylist(), emb,
                           t.column("text_tokens").to_pylist(), strict=True):
            cache.setdefault(h, (np.asarray(e, dtype=np.float32), n))
    return cache


def _embedding_table(hashes, vectors, tokens, version: str) -> pa.Table:
    dim = vectors.shape[1] if len(vectors) else 0
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
    return pa.table({
        "item_hash": pa.array(hashes, pa.string()),
        "embedding": pa.FixedSizeListArray.from_arrays(flat, dim) if dim else
        pa.array([], pa.list_(pa.float32())),
        "text_tokens": pa.array(tokens, pa.int32()),
        "item_model_version": pa.array([version] * len(hashes), pa.string()),
    })


def embed_texts(model, texts: list[str], batch_size: int, device: str,
                progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(n, d) float32 embeddings and (n,) text token counts, batched, with a progress bar."""
    import torch
    from tqdm import tqdm

    model.to(device)
    out, counts = [], []
    with torch.inference_mode():
        for start in tqdm(range(0, len(texts), batch_size), desc="embed items", unit="batch",
                          disable=not progress or not texts):
            emb, n = model.embed(texts[start:start + batch_size])
            out.append(emb.cpu().numpy())
            counts.append(n.numpy())
    if not out:
        return np.zeros((0, model.dim), np.float32), np.zeros(0, np.int64)
    return np.concatenate(out), np.concatenate(counts)


def embed_items(cfg: Config, items_path: Path, artifact: Path | None = None,
                progress: bool = True) -> dict[str, Any]:
    """Embed the items table through the cache. Returns hashes, vectors and counts."""
    version = item_model_version(cfg, artifact)
    cache_folder = cfg.hllm.cache_dir / version
    cache = _read_cache(cache_folder)
    items = pq.read_table(items_path, columns=["item_hash", "item_text"])
    hashes = items.column("item_hash").to_pylist()
    texts = items.column("item_text").to_pylist()
    todo = [i for i, h in enumerate(hashes) if h not in cache]
    log.info("%s: %d items, %d in the cache of %s, %d to embed",
             STAGE, len(hashes), len(hashes) - len(todo), version, len(todo))
    if todo:
        model = load_item_llm(cfg, artifact)
        vecs, counts = embed_texts(model, [texts[i] for i in todo], cfg.hllm.embed.item_batch_size,
                                   pick_device(cfg.hllm.device), progress)
        new = [hashes[i] for i in todo]
        cache_folder.mkdir(parents=True, exist_ok=True)
        part = cache_folder / f"part-{uuid.uuid4().hex}.parquet"
        tmp = part.with_suffix(".tmp")
        pq.write_table(_embedding_table(new, vecs, counts, version), tmp)
        os.replace(tmp, part)  # a part appears whole or not at all
        for h, v, n in zip(new, vecs, counts, strict=True):
            cache[h] = (v, int(n))
    kept, vectors, tokens, rejected = [], [], [], []
    for h in hashes:
        vec, n = cache[h]
        if n == 0:
            rejected.append((h, "empty_text"))  # tokenized to nothing: no information
        elif not np.all(np.isfinite(vec)):
            rejected.append((h, "non_finite"))
        else:
            kept.append(h)
            vectors.append(vec)
            tokens.append(n)
    dim = vectors[0].shape[0] if vectors else 0
    return {"version": version, "hashes": kept,
            "vectors": np.stack(vectors) if vectors else np.zeros((0, dim), np.float32),
            "tokens": tokens, "rejected": rejected, "from_cache": len(hashes) - len(todo),
            "embedded": len(todo)}


def run(cfg: Config, cycle_id: str, force: bool = False, progress: bool = True) -> dict[str, Any]:
    features = read_manifest(stage_dir(cfg.lake, cycle_id, "extract_features"))
    if features is None:
        raise UserError(f"cycle {cycle_id} has no committed extract_features stage: run it first")
    artifact = current_artifact(cfg, HLLM)
    # the Item LLM's version, not the HLLM artifact's: a first cycle embeds items before its
    # HLLM exists, and a new User LLM does not change item embeddings
    inputs = {"items": features["outputs"]["items"], "features_finished": features["finished_at"],
              "item_model_version": item_model_version(cfg, artifact),
              "code": fingerprint_code(Path(__file__))}

    def build(out: Path) -> StageOutput:
        result = embed_items(cfg, Path(features["outputs"]["items"]["path"]), artifact, progress)
        pq.write_table(_embedding_table(result["hashes"], result["vectors"], result["tokens"],
                                        result["version"]), out / "item_embeddings.parquet")
        pq.write_table(pa.table({
            "item_hash": pa.array([h for h, _ in result["rejected"]], pa.string()),
            "reason": pa.array([r for _, r in result["rejected"]], pa.string()),
        }), out / "rejected.parquet")
        return StageOutput(
            {"item_embeddings": {"path": "item_embeddings.parquet", "rows": len(result["hashes"])},
             "rejected": {"path": "rejected.parquet", "rows": len(result["rejected"])}},
            {"item_model_version": result["version"], "from_cache": result["from_cache"],
             "embedded": result["embedded"],
             "rejected_reasons": dict(Counter(r for _, r in result["rejected"])),
             "device": pick_device(cfg.hllm.device)})

    return run_stage(cfg, cycle_id, STAGE, inputs=inputs, config_hash=cfg.section_hash("hllm"),
                     build=build, force=force)
