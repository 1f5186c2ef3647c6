"""`creative-factory eval hllm`: next-item retrieval and click prediction on a hold-out.

Each user's most recent click is held out. From the clicks before it:
* the User LLM ranks every item by cosine(U, item embedding);
* the popularity baseline ranks items by clicks in the histories;
* the item-kNN baseline ranks items by co-occurrence cosine with the user's history items.
Reported: Recall@10 and NDCG@10 of the held-out item (history items are not excluded),
and the Item-User Predictor's AUC on (U, held-out item) against (U, random item).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from jobs.platform.config import Config
from jobs.platform.hllm_data import HistoryData, load_histories
from jobs.platform.registry import HLLM, read_meta, write_meta
from jobs.stages.embed_items import embed_items
from jobs.training import train_hllm
from jobs.training.train_hllm import features_for
from models.predictor import ItemUserPredictor
from models.user_llm import UserLLM, left_pad

log = logging.getLogger(__name__)
K = 10


def _ranking_metrics(scores: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """scores (U, n_items); targets (U,) -> Recall@K and NDCG@K."""
    target_score = scores.gather(1, targets[:, None])  # (U, 1)
    rank = (scores > target_score).sum(1)  # 0-based rank of the held-out item
    hit = rank < K
    ndcg = torch.where(hit, 1.0 / torch.log2(rank.float() + 2.0), torch.zeros_like(rank.float()))
    return {"recall@10": round(hit.float().mean().item(), 4),
            "ndcg@10": round(ndcg.mean().item(), 4)}


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Probability that a positive outscores a negative (ties count half)."""
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    return float(roc_auc_score(y, np.r_[pos, neg]))


@torch.no_grad()
def user_embeddings(user: UserLLM, data: HistoryData, max_history: int,
                    batch_size: int = 512) -> torch.Tensor:
    user.eval()
    out = []
    for start in range(0, len(data.histories), batch_size):
        hist = [data.items[torch.as_tensor(h)] for h in data.histories[start:start + batch_size]]
        x, mask = left_pad(hist, max_history)
        out.append(user(x, mask, with_states=False)[1])
    return torch.cat(out)


def _popularity(data: HistoryData) -> torch.Tensor:
    counts = np.bincount(np.concatenate(data.histories), minlength=len(data.item_hashes))
    return torch.as_tensor(counts, dtype=torch.float32)


def _item_knn_scores(data: HistoryData, users: slice) -> torch.Tensor:
    """Co-occurrence cosine between items (users as features), summed over the history."""
    n = len(data.item_hashes)
    rows = np.concatenate([np.full(len(h), u) for u, h in enumerate(data.histories)])
    cols = np.concatenate(data.histories)
    import scipy.sparse as sp

    ui = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)),
                       shape=(len(data.histories), n))
    ui.data[:] = 1.0
    norms = np.sqrt(np.asarray(ui.sum(0))).ravel() + 1e-9
    co = (ui.T @ ui).tocsr()  # (n, n) co-occurrence
    co = sp.diags(1 / norms) @ co @ sp.diags(1 / norms)
    hist = ui[users]  # (u, n)
    return torch.as_tensor((hist @ co).toarray(), dtype=torch.float32)


def evaluate(user: UserLLM, predictor: ItemUserPredictor, data: HistoryData,
             cfg: Config, seed: int = 0) -> dict[str, Any]:
    targets = torch.as_tensor(data.targets)
    users = user_embeddings(user, data, cfg.hllm.user_llm.max_history)
    items = data.items
    scores = F.normalize(users, dim=-1) @ F.normalize(items, dim=-1).T  # (U, n_items)
    result: dict[str, Any] = {"users": len(data.user_ids), "items": len(data.item_hashes)}
    result["user_llm"] = _ranking_metrics(scores, targets)
    pop = _popularity(data).expand(len(targets), -1)
    result["popularity"] = _ranking_metrics(pop + 1e-6 * torch.rand(pop.shape), targets)
    knn = torch.cat([_item_knn_scores(data, slice(s, s + 2048))
                     for s in range(0, len(targets), 2048)])
    result["item_knn"] = _ranking_metrics(knn + 1e-6 * torch.rand(knn.shape), targets)
    predictor.eval()
    gen = torch.Generator().manual_seed(seed)
    negatives = torch.randint(0, len(items), (len(targets),), generator=gen)
    with torch.no_grad():
        pos = torch.sigmoid(predictor(users, items[targets])).numpy()
        neg = torch.sigmoid(predictor(users, items[negatives])).numpy()
    keep = (negatives != targets).numpy()
    result["predictor_auc"] = round(auc(pos, neg[keep]), 4)
    pop_recall = result["popularity"]["recall@10"]
    result["recall_vs_popularity"] = (round(result["user_llm"]["recall@10"] / pop_recall, 2)
                                      if pop_recall else None)
    return result


def evaluate_artifact(cfg: Config, artifact, cycle_id: str) -> dict[str, Any]:
    """Evaluate a saved HLLM artifact on a cycle's features (items through the cache)."""
    artifact = Path(artifact)
    features = features_for(cfg, cycle_id)
    emb = embed_items(cfg, Path(features["outputs"]["items"]["path"]), artifact, progress=False)
    data = load_histories(Path(features["outputs"]["user_sequences"]["path"]), emb["hashes"],
                          torch.from_numpy(emb["vectors"]))
    return evaluate(UserLLM.load(artifact / "user_llm"),
                    ItemUserPredictor.load(artifact / "predictor"), data, cfg)


def train_and_evaluate(cfg: Config, cycle_id: str, **train_args: Any) -> Path:
    """Train a new HLLM version on a cycle and record its hold-out metrics in `hllm.json`."""
    path = train_hllm.train(cfg, cycle_id, **train_args)
    meta = read_meta(path, HLLM)
    meta["metrics"] = evaluate_artifact(cfg, path, cycle_id)
    write_meta(path, HLLM, meta)
    log.info("HLLM %s: %s", path.name, meta["metrics"])
    return path
