"""`creative-factory train hllm`: train the User LLM and the Item-User Predictor.

Objectives (HLLM, HLLM-Creator §3.4.2):
* next-item contrastive loss: the state after each history item must be closer to the
  next item's embedding than to sampled negatives (InfoNCE, temperature tau);
* click classification: the Item-User Predictor scores (U, clicked item) as 1 and
  (U, random item) as 0, where U is the state at [USER];
  U is also trained to retrieve the next item (the same InfoNCE), so it lives in item space.

The Item LLM is frozen by default (embeddings come from the cache); AdamW; seeded;
progress bar; a checkpoint every `checkpoint_every` steps, and a killed run resumes from
the last one. CPU by default, CUDA with bf16 autocast when present.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from jobs.platform.config import Config
from jobs.platform.devices import pick_device, seed_everything
from jobs.platform.errors import UserError
from jobs.platform.hllm_data import HistoryData, load_histories
from jobs.platform.lake import read_manifest, stage_dir
from jobs.platform.registry import HLLM, load_item_llm, set_current_if_none
from jobs.stages.embed_items import embed_items
from models.predictor import ItemUserPredictor, PredictorConfig
from models.user_llm import UserLLM, UserLLMConfig, left_pad

log = logging.getLogger(__name__)


def build_models(cfg: Config, item_dim: int) -> tuple[UserLLM, ItemUserPredictor]:
    u = cfg.hllm.user_llm
    user = UserLLM(UserLLMConfig(item_dim=item_dim, hidden_size=u.hidden_size,
                                 num_layers=u.num_layers, num_heads=u.num_heads,
                                 intermediate_size=u.intermediate_size,
                                 max_history=u.max_history, base_model=u.base_model,
                                 history_skip=u.history_skip))
    p = cfg.hllm.predictor
    predictor = ItemUserPredictor(PredictorConfig(dim=item_dim, depth=p.depth, width=p.width,
                                                  dropout=p.dropout))
    return user, predictor


def info_nce(pred: torch.Tensor, target: torch.Tensor, negatives: torch.Tensor,
             temperature: float, target_idx: torch.Tensor, neg_idx: torch.Tensor) -> torch.Tensor:
    """pred, target (N, d); negatives (K, d). A negative equal to the target is masked."""
    pred, target, negatives = (F.normalize(x.float(), dim=-1) for x in (pred, target, negatives))
    pos = (pred * target).sum(-1, keepdim=True)  # (N, 1)
    neg = pred @ negatives.T  # (N, K)
    same = (target_idx[:, None] == neg_idx[None, :]).to(neg.device)
    neg = neg.masked_fill(same, float("-inf"))
    logits = torch.cat([pos, neg], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(pred), dtype=torch.long, device=pred.device))


def batch_losses(user: UserLLM, predictor: ItemUserPredictor, data: HistoryData,
                 users_idx: np.ndarray, cfg: Config, gen: torch.Generator,
                 item_table: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 device: str = "cpu") -> dict[str, torch.Tensor]:
    """Losses on a batch of users. Each user's training sequence is their history; the
    last history item is the [USER] target (the held-out click is never used).
    `item_table(indices)` gives the embeddings of those items: cached rows when the Item
    LLM is frozen, a forward pass of the Item LLM (with gradients) when it is trained."""
    t = cfg.hllm.train
    max_history = cfg.hllm.user_llm.max_history
    n_items = len(data.items)
    seqs = [data.histories[i][-(max_history + 1):] for i in users_idx]  # what the model sees
    neg_idx = torch.randint(0, n_items, (t.negatives,), generator=gen)
    random_items = torch.randint(0, n_items, (len(seqs),), generator=gen)

    # Embed each item the batch touches once, then index into that compact table.
    needed = torch.unique(torch.cat([torch.as_tensor(np.concatenate(seqs)), neg_idx,
                                     random_items]))
    table = (item_table or (lambda idx: data.items[idx]))(needed).to(device)  # (U, d)
    slot = torch.full((n_items,), -1, dtype=torch.long)
    slot[needed] = torch.arange(len(needed))

    def emb(idx: torch.Tensor) -> torch.Tensor:
        return table[slot[idx].to(device)]

    inputs = [torch.as_tensor(s[:-1]) for s in seqs]  # (n_i - 1,)
    nexts = [torch.as_tensor(s[1:]) for s in seqs]  # item after each input
    x, mask = left_pad([emb(s) for s in inputs], max_history)
    nxt, _ = left_pad([n[:, None].float() for n in nexts], max_history)
    nxt = nxt[..., 0].long()  # (B, T): index of the next item per position
    x, mask = x.to(device), mask.to(device)
    states, users = user(x, mask)  # (B, T, d), (B, d)

    valid = mask.bool().cpu()
    next_loss = info_nce(states[valid.to(device)], emb(nxt[valid]), emb(neg_idx), t.temperature,
                         nxt[valid], neg_idx)
    last = torch.as_tensor([int(s[-1]) for s in seqs])  # the [USER] state's target
    user_loss = info_nce(users, emb(last), emb(neg_idx), t.temperature, last, neg_idx)

    logits = torch.cat([predictor(users, emb(last)), predictor(users, emb(random_items))])
    labels = torch.cat([torch.ones(len(seqs)), (random_items == last).float()]).to(device)
    cls_loss = F.binary_cross_entropy_with_logits(logits.float(), labels)
    total = next_loss + user_loss + t.cls_weight * cls_loss
    return {"loss": total, "next_item": next_loss, "user": user_loss, "cls": cls_loss}


def _checkpoint(path: Path, step: int, epoch: int, user, predictor, optim, gen,
                item_llm=None) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"step": step, "epoch": epoch, "user": user.state_dict(),
                "item_llm": item_llm.state_dict() if item_llm is not None else None,
                "predictor": predictor.state_dict(), "optim": optim.state_dict(),
                "gen": gen.get_state(), "torch_rng": torch.get_rng_state(),
                "np_rng": np.random.get_state()}, tmp)
    os.replace(tmp, path)  # a checkpoint is whole or absent


def features_for(cfg: Config, cycle_id: str) -> dict[str, Any]:
    m = read_manifest(stage_dir(cfg.lake, cycle_id, "extract_features"))
    if m is None:
        raise UserError(f"cycle {cycle_id} has no committed extract_features stage; run "
                        f"`creative-factory extract-features --cycle-id {cycle_id}` first")
    return m


def train(cfg: Config, cycle_id: str, out_dir: Path | None = None, resume: bool = True,
          promote_if_none: bool = True, progress: bool = True) -> Path:
    """Train on a cycle's features; write an HLLM artifact and return its directory (its
    held-out metrics are recorded by `eval_hllm.train_and_evaluate`)."""
    t = cfg.hllm.train
    seed_everything(t.seed)
    features = features_for(cfg, cycle_id)
    emb = embed_items(cfg, Path(features["outputs"]["items"]["path"]), progress=progress)
    items = torch.from_numpy(emb["vectors"])
    data = load_histories(Path(features["outputs"]["user_sequences"]["path"]),
                          emb["hashes"], items)
    trainable = [i for i, h in enumerate(data.histories) if len(h) >= 2]
    if not trainable:
        raise UserError("no user has 3+ clicks on embedded items: nothing to train on")
    seed_everything(t.seed)  # again: embedding items (or not, when cached) used the RNG
    device = pick_device(cfg.hllm.device)
    user, predictor = build_models(cfg, items.shape[1])
    user.to(device)
    predictor.to(device)
    groups = [{"params": list(user.parameters()) + list(predictor.parameters()), "lr": t.lr}]
    item_llm, item_table = None, None
    if cfg.hllm.item_llm.train_encoder:
        # End to end: the Item LLM embeds every item a batch touches, with gradients.
        item_llm = load_item_llm(cfg).to(device)
        item_llm.requires_grad_(True)
        texts = _item_texts(Path(features["outputs"]["items"]["path"]), data.item_hashes)
        tokens = item_llm.tokenize(texts)

        def item_table(idx: torch.Tensor) -> torch.Tensor:
            return item_llm(tokens["input_ids"][idx].to(device),
                            tokens["attention_mask"][idx].to(device),
                            tokens["item_pos"][idx].to(device))

        groups.append({"params": list(item_llm.parameters()), "lr": t.item_lr})
    params = [p for g in groups for p in g["params"]]
    optim = torch.optim.AdamW(groups, weight_decay=t.weight_decay)
    gen = torch.Generator().manual_seed(t.seed)
    # bf16 autocast on CUDA; CPU runs in float32
    autocast = torch.autocast(device_type="cuda", dtype=torch.bfloat16,
                              enabled=device.startswith("cuda"))

    work = cfg.hllm.model_dir / f".training-{cycle_id}-{cfg.section_hash('hllm')}"
    work.mkdir(parents=True, exist_ok=True)
    ckpt = work / "checkpoint.pt"
    step = start_epoch = 0
    if resume and ckpt.is_file():
        state = torch.load(ckpt, weights_only=False)
        user.load_state_dict(state["user"])
        predictor.load_state_dict(state["predictor"])
        if item_llm is not None:
            item_llm.load_state_dict(state["item_llm"])
        optim.load_state_dict(state["optim"])
        gen.set_state(state["gen"])
        torch.set_rng_state(state["torch_rng"])
        np.random.set_state(state["np_rng"])
        step, start_epoch = state["step"], state["epoch"]
        log.info("resuming HLLM training from step %d (epoch %d)", step, start_epoch)

    steps_per_epoch = (len(trainable) + t.batch_size - 1) // t.batch_size
    history: list[dict[str, float]] = []
    started = time.time()
    bar = tqdm(total=t.epochs * steps_per_epoch, initial=step, desc="train hllm", unit="step",
               disable=not progress)
    for epoch in range(start_epoch, t.epochs):
        for module in (user, predictor, item_llm):
            if module is not None:
                module.train()
        order = np.random.default_rng([t.seed, epoch]).permutation(trainable)
        done_in_epoch = step - epoch * steps_per_epoch
        for b in range(max(done_in_epoch, 0), steps_per_epoch):
            idx = order[b * t.batch_size:(b + 1) * t.batch_size]
            with autocast:
                losses = batch_losses(user, predictor, data, idx, cfg, gen, item_table, device)
            optim.zero_grad()
            losses["loss"].backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optim.step()
            step += 1
            bar.update(1)
            bar.set_postfix({k: f"{v.item():.3f}" for k, v in losses.items()})
            if step % t.checkpoint_every == 0:
                _checkpoint(ckpt, step, epoch if b + 1 < steps_per_epoch else epoch + 1,
                            user, predictor, optim, gen, item_llm)
        history.append({"epoch": epoch, "step": step,
                        **{k: round(v.item(), 4) for k, v in losses.items()}})
    bar.close()

    user.cpu()
    predictor.cpu()
    if item_llm is not None:
        item_llm.cpu().requires_grad_(False)
    version_hash = hashlib.sha256()
    for module in (user, predictor, *([item_llm] if item_llm is not None else [])):
        for k, v in sorted(module.state_dict().items()):
            version_hash.update(k.encode() + v.detach().cpu().numpy().tobytes())
    version = "hllm-" + version_hash.hexdigest()[:12]
    out = Path(out_dir) if out_dir else cfg.hllm.model_dir / version
    staging = out.parent / f".{out.name}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    user.save(staging / "user_llm")
    predictor.save(staging / "predictor")
    (staging / "item_llm.json").write_text(json.dumps(cfg.hllm.item_llm.model_dump(), indent=2))
    if item_llm is not None:
        item_llm.save(staging / "item_llm")  # HF format; its own version keys the cache
    (staging / "hllm.json").write_text(json.dumps({
        "version": version,
        "item_model_version": emb["version"] if item_llm is None else "(fine-tuned, see item_llm/)",
        "device": device,
        "trained_at": datetime.now(UTC).isoformat(),
        "command": " ".join(["creative-factory", *sys.argv[1:]]) or "train hllm",
        "seed": t.seed,
        "cycle_id": cycle_id,
        "training_data_hash": data.data_hash,
        "users": len(data.user_ids), "trainable_users": len(trainable),
        "items": len(data.item_hashes),
        "steps": step, "seconds": round(time.time() - started, 1),
        "loss_history": history,
        "config": cfg.hllm.model_dump(mode="json"),
    }, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(staging, out)
    shutil.rmtree(work, ignore_errors=True)
    if promote_if_none:
        set_current_if_none(cfg, HLLM, out)
    log.info("HLLM %s written to %s", version, out)
    return out


def _item_texts(items_path: Path, hashes: list[str]) -> list[str]:
    import pyarrow.parquet as pq

    table = pq.read_table(items_path, columns=["item_hash", "item_text"])
    text = dict(zip(table.column("item_hash").to_pylist(), table.column("item_text").to_pylist(),
                    strict=True))
    return [text[h] for h in hashes]
