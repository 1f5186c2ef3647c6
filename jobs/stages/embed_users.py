"""Stage 3, embed_users: user histories -> User LLM embeddings, in shards.

Users are split into `hllm.embed.user_shards` shards by a stable hash of user_id; each
shard is one mapped Airflow task. A shard streams `user_sequences` in batches (never all
users in memory), maps each history to cached item embeddings, and writes its users'
embeddings. `commit` then gathers the shards into
`{lake}/cycles/{cycle_id}/embed_users/` with one `_SUCCESS` manifest (the shards and the
commit run through `ShardedStage`, jobs/platform/lake.py):

    shard-00000.parquet ...   user_id, embedding (float32), history_used, model_version
    _SUCCESS                  users embedded; skipped (empty history); rejected (NaN/inf)

A re-run shard whose output exists, or whose stage is committed, for the same inputs is
skipped; `force` re-runs every shard and replaces the stage.
"""

from __future__ import annotations

import logging
import os
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jobs.platform.config import Config
from jobs.platform.devices import pick_device
from jobs.platform.errors import UserError
from jobs.platform.hllm_data import load_item_embeddings
from jobs.platform.lake import ShardedStage, StageOutput, fingerprint_code, read_manifest, stage_dir
from jobs.platform.registry import HLLM, artifact_version, require_artifact
from models.user_llm import UserLLM

STAGE = "embed_users"
log = logging.getLogger(__name__)


def shard_of(user_ids: list[str], n_shards: int) -> np.ndarray:
    return np.fromiter((zlib.crc32(u.encode()) % n_shards for u in user_ids), dtype=np.int64,
                       count=len(user_ids))


def history_slots(histories: pa.ListArray, hash_set: pa.Array,
                  max_history: int) -> tuple[np.ndarray, dict[str, int]]:
    """Histories of item hashes -> a (users, max_history) matrix of item rows, left-padded
    with -1: unknown items dropped, the most recent `max_history` known items kept in order.
    Vectorized (no Python loop per user or per item)."""
    import pyarrow.compute as pc

    if isinstance(histories, pa.ChunkedArray):
        histories = histories.combine_chunks()
    offsets = np.asarray(histories.offsets)  # (R + 1,)
    rows = len(histories)
    values = pc.index_in(histories.flatten(), value_set=hash_set)
    idx = np.asarray(values.fill_null(-1), dtype=np.int64)  # (N,) item row or -1
    known = idx >= 0
    row_of = np.repeat(np.arange(rows), np.diff(offsets))
    # known items at or after each position, counted within its row (1 = the most recent)
    from_end = np.cumsum(known[::-1])[::-1]
    tail = np.append(from_end, 0)[offsets[1:]]  # known items after each row's end
    rank = from_end - tail[row_of]
    keep = known & (rank <= max_history)
    slots = np.full((rows, max_history), -1, dtype=np.int64)
    slots[row_of[keep], max_history - rank[keep]] = idx[keep]
    per_row = np.bincount(row_of[known], minlength=rows)
    stats = {"users": rows, "unknown_items_dropped": int((~known).sum()),
             "skipped_empty_history": int((per_row == 0).sum()),
             "truncated_histories": int((per_row > max_history).sum())}
    return slots, stats


def _sharded(cfg: Config, cycle_id: str) -> tuple[ShardedStage, dict, dict, Path]:
    """The stage over its inputs (the features, the item embeddings, the HLLM in use)."""
    features = read_manifest(stage_dir(cfg.lake, cycle_id, "extract_features"))
    items = read_manifest(stage_dir(cfg.lake, cycle_id, "embed_items"))
    if features is None or items is None:
        raise UserError(f"cycle {cycle_id} needs extract_features and embed_items first")
    artifact = require_artifact(cfg, HLLM)
    inputs = {"user_sequences": features["outputs"]["user_sequences"],
              "features_finished": features["finished_at"],
              "item_embeddings_finished": items["finished_at"],
              "model_version": artifact_version(artifact, HLLM),
              "shards": cfg.hllm.embed.user_shards,
              "max_history": cfg.hllm.user_llm.max_history,
              "code": fingerprint_code(Path(__file__))}
    stage = ShardedStage(cfg, cycle_id, STAGE, inputs=inputs,
                         config_hash=cfg.section_hash("hllm"), shards=cfg.hllm.embed.user_shards)
    return stage, features, items, artifact


def run_shard(cfg: Config, cycle_id: str, shard: int, force: bool = False,
              progress: bool = True) -> dict[str, Any]:
    """Embed the users of one shard; returns its counts (skipped when already done or when
    the stage is committed for the same inputs)."""
    stage, features, items, artifact = _sharded(cfg, cycle_id)
    return stage.run_shard(shard, lambda out: _embed_shard(
        cfg, shard, features, items, artifact, stage.run.inputs["model_version"], out,
        progress), force=force)


def _embed_shard(cfg: Config, shard: int, features: dict, items_manifest: dict,
                 artifact: Path, version: str, out_dir: Path, progress: bool) -> dict[str, Any]:
    """Stream `user_sequences` in batches, embed this shard's users, write
    `out_dir/embeddings.parquet` (whole or absent); returns the counts."""
    import torch
    from tqdm import tqdm

    n_shards = cfg.hllm.embed.user_shards
    hashes, items = load_item_embeddings(Path(items_manifest["outputs"]["item_embeddings"]["path"]))
    hash_set = pa.array(hashes, pa.string())
    device = pick_device(cfg.hllm.device)
    model = UserLLM.load(artifact / "user_llm").to(device).eval()
    max_history = cfg.hllm.user_llm.max_history
    started = time.time()
    counts = {"users": 0, "embedded": 0, "skipped_empty_history": 0, "rejected_non_finite": 0,
              "truncated_histories": 0, "unknown_items_dropped": 0}
    out = out_dir / "embeddings.parquet"
    tmp = out.with_suffix(".tmp")
    schema = pa.schema([("user_id", pa.string()),
                        ("embedding", pa.list_(pa.float32(), items.shape[1])),
                        ("history_used", pa.int32()), ("model_version", pa.string())])
    seq_path = Path(features["outputs"]["user_sequences"]["path"])
    files = sorted(seq_path.glob("*.parquet"))
    total = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    bar = tqdm(total=total, desc=f"embed users shard {shard}", unit="user",
               disable=not progress)
    with pq.ParquetWriter(tmp, schema) as writer, torch.inference_mode():
        for f in files:
            for rb in pq.ParquetFile(f).iter_batches(batch_size=cfg.hllm.embed.user_batch_size,
                                                     columns=["user_id", "item_hashes"]):
                bar.update(rb.num_rows)
                users = rb.column("user_id").to_pylist()
                mine = np.flatnonzero(shard_of(users, n_shards) == shard)
                if not len(mine):
                    continue
                slots, stats = history_slots(rb.column("item_hashes").take(pa.array(mine)),
                                             hash_set, max_history)
                for k, v in stats.items():
                    counts[k] += v
                has_history = (slots >= 0).any(axis=1)
                if not has_history.any():
                    continue
                slots = slots[has_history]  # (B, T) item rows, -1 = padding
                kept_users = [users[i] for i in mine[has_history]]
                mask = torch.from_numpy(slots >= 0).long()
                x = items[torch.from_numpy(slots.clip(min=0))] * mask[..., None]  # (B, T, d)
                emb = model(x.to(device), mask.to(device), with_states=False)[1]
                emb = emb.float().cpu().numpy()  # (B, d)
                finite = np.isfinite(emb).all(axis=1)
                counts["rejected_non_finite"] += int((~finite).sum())
                keep = np.flatnonzero(finite)
                counts["embedded"] += len(keep)
                writer.write_table(pa.table({
                    "user_id": pa.array([kept_users[k] for k in keep], pa.string()),
                    "embedding": pa.FixedSizeListArray.from_arrays(
                        pa.array(emb[keep].reshape(-1)), items.shape[1]),
                    "history_used": pa.array(mask.sum(1).numpy()[keep], pa.int32()),
                    "model_version": pa.array([version] * len(keep), pa.string()),
                }, schema=schema))
    bar.close()
    counts["seconds"] = round(time.time() - started, 3)  # summed over shards in the manifest
    os.replace(tmp, out)
    return counts


def commit(cfg: Config, cycle_id: str, force: bool = False) -> dict[str, Any]:
    """Gather all shards into the stage folder with one manifest (after every shard ran)."""
    stage, _, _, _ = _sharded(cfg, cycle_id)

    def gather(shard_dirs: list[Path], per_shard: list[dict], out: Path) -> StageOutput:
        totals: dict[str, float] = {}
        for counts in per_shard:
            for k, v in counts.items():
                totals[k] = totals.get(k, 0) + v
        for s, src in enumerate(shard_dirs):
            os.replace(src / "embeddings.parquet", out / f"shard-{s:05d}.parquet")
        return StageOutput({"user_embeddings": {"path": ".", "rows": totals["embedded"]}},
                           {"counts": totals, "model_version": stage.run.inputs["model_version"]})

    return stage.commit(gather, force=force)


def run(cfg: Config, cycle_id: str, force: bool = False, progress: bool = True) -> dict:
    """All shards in this process, then commit (the CLI path; Airflow maps the shards)."""
    for shard in range(cfg.hllm.embed.user_shards):
        run_shard(cfg, cycle_id, shard, force=force, progress=progress)
    return commit(cfg, cycle_id, force=force)
