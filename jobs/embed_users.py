"""Stage 3, embed_users: user histories -> User LLM embeddings, in shards.

Users are split into `hllm.embed.user_shards` shards by a stable hash of user_id; each
shard is one mapped Airflow task. A shard streams `user_sequences` in batches (never all
users in memory), maps each history to cached item embeddings, and writes its users'
embeddings. `commit` then gathers the shards into
`{lake}/cycles/{cycle_id}/embed_users/` with one `_SUCCESS` manifest:

    shard-00000.parquet ...   user_id, embedding (float32), history_used, model_version
    _SUCCESS                  users embedded; skipped (empty history); rejected (NaN/inf)

A re-run shard whose output exists for the same inputs is skipped.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jobs.config import Config
from jobs.errors import UserError
from jobs.lake import StageRun, fingerprint_code, read_manifest, stage_dir

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


def _inputs(cfg: Config, cycle_id: str) -> tuple[dict, dict, Path]:
    from jobs.hllm_models import require_artifact

    features = read_manifest(stage_dir(cfg.lake, cycle_id, "extract_features"))
    items = read_manifest(stage_dir(cfg.lake, cycle_id, "embed_items"))
    if features is None or items is None:
        raise UserError(f"cycle {cycle_id} needs extract_features and embed_items first")
    return features, items, require_artifact(cfg)


def _fingerprint(cfg: Config, features: dict, items: dict, artifact: Path) -> dict[str, Any]:
    from jobs.hllm_models import artifact_version

    return {"user_sequences": features["outputs"]["user_sequences"],
            "features_finished": features["finished_at"],
            "item_embeddings_finished": items["finished_at"],
            "model_version": artifact_version(artifact),
            "shards": cfg.hllm.embed.user_shards,
            "max_history": cfg.hllm.user_llm.max_history,
            "code": fingerprint_code(Path(__file__))}


def _work_dir(cfg: Config, cycle_id: str, fingerprint: dict) -> Path:
    key = zlib.crc32(json.dumps(fingerprint, sort_keys=True).encode())
    return stage_dir(cfg.lake, cycle_id, STAGE).parent / f".{STAGE}.shards-{key:08x}"


def run_shard(cfg: Config, cycle_id: str, shard: int, force: bool = False,
              progress: bool = True) -> dict[str, Any]:
    """Embed the users of one shard; returns its counts (skipped when already done)."""
    import torch
    from tqdm import tqdm

    from jobs.embed_items import device_for
    from jobs.hllm_data import load_item_embeddings
    from models.user_llm import UserLLM

    n_shards = cfg.hllm.embed.user_shards
    if not 0 <= shard < n_shards:
        raise UserError(f"shard {shard} is outside 0..{n_shards - 1}")
    features, items_manifest, artifact = _inputs(cfg, cycle_id)
    fp = _fingerprint(cfg, features, items_manifest, artifact)
    work = _work_dir(cfg, cycle_id, fp)
    out = work / f"shard-{shard:05d}.parquet"
    done = out.with_suffix(".json")
    if done.is_file() and not force:
        log.info("%s shard %d/%d is done: skipped", STAGE, shard, n_shards)
        return {**json.loads(done.read_text()), "skipped": True}

    hashes, items = load_item_embeddings(Path(items_manifest["outputs"]["item_embeddings"]["path"]))
    hash_set = pa.array(hashes, pa.string())
    device = device_for(cfg)
    model = UserLLM.load(artifact / "user_llm").to(device).eval()
    version = fp["model_version"]
    max_history = cfg.hllm.user_llm.max_history
    batch = cfg.hllm.embed.user_batch_size
    import time

    started = time.time()
    counts = {"users": 0, "embedded": 0, "skipped_empty_history": 0, "rejected_non_finite": 0,
              "truncated_histories": 0, "unknown_items_dropped": 0}
    work.mkdir(parents=True, exist_ok=True)
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
            for rb in pq.ParquetFile(f).iter_batches(batch_size=batch,
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
    done.write_text(json.dumps(counts))  # written last: the shard is complete
    log.info("%s shard %d/%d: %s", STAGE, shard, n_shards, counts)
    return {**counts, "skipped": False}


def commit(cfg: Config, cycle_id: str) -> dict[str, Any]:
    """Gather all shards into the stage folder with one manifest (after every shard ran)."""
    features, items_manifest, artifact = _inputs(cfg, cycle_id)
    fp = _fingerprint(cfg, features, items_manifest, artifact)
    stage = StageRun(cfg.lake, cycle_id, STAGE, fp, cfg.section_hash("hllm"))
    with stage.exclusive():
        if existing := stage.up_to_date():
            return {**existing, "skipped": True}
        work = _work_dir(cfg, cycle_id, fp)
        n = cfg.hllm.embed.user_shards
        missing = [s for s in range(n) if not (work / f"shard-{s:05d}.json").is_file()]
        if missing:
            raise UserError(f"{STAGE} for cycle {cycle_id}: shards {missing} have not run")
        out = stage.begin()
        totals: dict[str, int] = {}
        for s in range(n):
            for k, v in json.loads((work / f"shard-{s:05d}.json").read_text()).items():
                totals[k] = totals.get(k, 0) + v
            os.replace(work / f"shard-{s:05d}.parquet", out / f"shard-{s:05d}.parquet")
        manifest = stage.commit(
            {"user_embeddings": {"path": str(stage.final), "rows": totals["embedded"]}},
            extra={"counts": totals, "model_version": fp["model_version"], "shards": n})
        shutil.rmtree(work, ignore_errors=True)
        for stale in stage.final.parent.glob(f".{STAGE}.shards-*"):
            shutil.rmtree(stale, ignore_errors=True)
    return {**manifest, "skipped": False}


def run(cfg: Config, cycle_id: str, force: bool = False, progress: bool = True) -> dict:
    """All shards in this process, then commit (the CLI path; Airflow maps the shards)."""
    for shard in range(cfg.hllm.embed.user_shards):
        run_shard(cfg, cycle_id, shard, force=force, progress=progress)
    return commit(cfg, cycle_id)
