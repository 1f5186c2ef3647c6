"""Data for HLLM training and evaluation: item embeddings and users' histories as indices.

The split is a last-click hold-out: each user's most recent click is the evaluation
target, the clicks before it are the history. Training never sees the held-out click.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from jobs.platform.errors import UserError


@dataclass
class HistoryData:
    item_hashes: list[str]  # row i of `items` is the embedding of item_hashes[i]
    items: torch.Tensor  # (n_items, d) float32, finite
    histories: list[np.ndarray]  # per user: item indices, oldest first (held-out click removed)
    targets: np.ndarray  # (n_users,) held-out item index per user
    user_ids: list[str]
    data_hash: str  # identifies the training data (user_sequences + items)


def load_item_embeddings(path: Path) -> tuple[list[str], torch.Tensor]:
    table = pq.read_table(path, columns=["item_hash", "embedding"])
    hashes = table.column("item_hash").to_pylist()
    flat = table.column("embedding").combine_chunks()
    dim = len(flat[0]) if len(flat) else 0
    values = np.array(flat.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
    return hashes, torch.from_numpy(values.reshape(len(hashes), dim))


def load_histories(sequences_path: Path, item_hashes: list[str], items: torch.Tensor,
                   min_history: int = 2) -> HistoryData:
    """Users with at least `min_history` + 1 known clicks; the last one is held out."""
    index = {h: i for i, h in enumerate(item_hashes)}
    table = pq.read_table(sequences_path, columns=["user_id", "item_hashes"])
    digest = hashlib.sha256()
    histories, targets, users = [], [], []
    for user, seq in zip(table.column("user_id").to_pylist(),
                         table.column("item_hashes").to_pylist(), strict=True):
        digest.update(user.encode() + b"\0" + "|".join(seq).encode() + b"\n")
        known = [index[h] for h in seq if h in index]
        if len(known) < min_history + 1:
            continue
        histories.append(np.asarray(known[:-1], dtype=np.int64))
        targets.append(known[-1])
        users.append(user)
    if not users:
        raise UserError(f"no user in {sequences_path} has {min_history + 1}+ clicks on "
                        "embedded items: nothing to train or evaluate on")
    digest.update("|".join(item_hashes).encode())
    return HistoryData(item_hashes, items, histories, np.asarray(targets), users,
                       digest.hexdigest()[:16])
