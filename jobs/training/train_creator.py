"""`creative-factory train creator`: train the Creative LLM (HLLM-Creator §3.4).

Data: the cycle's `build_dataset` examples (split = train) and the users' embeddings U
from the cycle's `embed_users` stage (HLLM frozen), or from the User LLM run on the
users' histories with gradients (`creator.train.hllm: end_to_end`).

Loss = gen_weight · L_gen + cls_weight · L_cls + align_weight · L_align + recon_weight · L_recon:
* L_gen: next-token loss of the teacher's title given [proj(U), ad text (, query)];
* L_cls: the Item-User Predictor's click loss on (U, the example's ad) against (U, a random
  ad). It trains U, so it only has trainable parameters end to end; with the HLLM frozen it
  is computed and logged (the HLLM was trained with it) but adds no gradient;
* L_align: InfoNCE between proj(U) and V, the LM's feature of the interest description
  (same-user pairs in a batch are not negatives);
* L_recon: next-token loss of the interest description given proj(U).

The LM is a pretrained base (`creator.model.base_model`, by default SmolLM2-135M-Instruct
converted from its package, jobs/platform/base_models.py), fine-tuned: on a CPU only its top
`trainable_layers` layers, the final norm and the projection of U (the budget there is
training tokens: `max_examples` examples, `epochs` passes); on CUDA all of it, in bf16. A
model trained from scratch with its own BPE tokenizer (`base_model: null`) is a test
fixture. AdamW with warm-up and cosine decay, seeded; a checkpoint of the trained tensors
every `checkpoint_every` steps, and a killed run resumes from the last one. The
artifact `{creator.model_dir}/{version}/` holds `lm/` (HF format, loadable by vLLM),
`user_projection.safetensors`, `creative_llm.json` and `creator.json` (version, HLLM
version, data hash, config, loss history, evaluation metrics).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from tqdm import tqdm

from jobs.platform.base_models import resolve_base_model
from jobs.platform.config import Config
from jobs.platform.devices import pick_device, seed_everything
from jobs.platform.errors import UserError
from jobs.platform.hllm_data import load_item_embeddings
from jobs.platform.lake import read_manifest, stage_dir
from jobs.platform.registry import (
    CREATOR,
    HLLM,
    artifact_version,
    require_artifact,
    set_current_if_none,
    write_meta,
)
from jobs.stages.badcase_rules import read_lines
from jobs.training.creator_tokenizer import train_tokenizer
from models.creative_llm import CreativeLLM, CreativeLLMConfig
from models.predictor import ItemUserPredictor
from models.user_llm import UserLLM, left_pad

log = logging.getLogger(__name__)


def _manifest(cfg: Config, cycle_id: str, stage: str, hint: str) -> dict:
    m = read_manifest(stage_dir(cfg.lake, cycle_id, stage))
    if m is None:
        raise UserError(f"cycle {cycle_id} has no committed {stage} stage: {hint}")
    return m


def load_user_embeddings(path: str | Path) -> dict[str, np.ndarray]:
    t = pq.read_table(path, columns=["user_id", "embedding"])
    flat = t.column("embedding").combine_chunks()
    dim = flat.type.list_size if hasattr(flat.type, "list_size") else len(flat[0])
    vecs = np.asarray(flat.flatten().to_numpy(zero_copy_only=False), np.float32).reshape(-1, dim)
    return dict(zip(t.column("user_id").to_pylist(), vecs, strict=True))


def tokenizer_corpus(features: dict, examples: list[dict], phrases: list[str]) -> list[str]:
    """The project's own text: ads, queries, the teacher's titles and descriptions."""
    ads = pq.read_table(features["outputs"]["active_ads"]["path"],
                        columns=["title", "selling_points", "brand", "category"]).to_pylist()
    queries = pq.read_table(features["outputs"]["ad_queries"]["path"],
                            columns=["query"]).column("query").to_pylist()
    texts = [a["title"] for a in ads] + [p for a in ads for p in a["selling_points"] or []]
    texts += [a["brand"] for a in ads] + [a["category"].replace("_", " ") for a in ads]
    texts += queries + phrases
    texts += [e["title"] for e in examples] + [e["description"] for e in examples]
    return texts


def build_model(cfg: Config, features: dict, examples: list[dict], out: Path
                ) -> tuple[Any, CreativeLLMConfig]:
    """The tokenizer and config of the model to train: the pretrained base's own tokenizer
    (the product default), or a BPE tokenizer trained on the cycle's text for the
    from-scratch test fixture (`creator.model.base_model: null`)."""
    from transformers import AutoTokenizer

    m = cfg.creator.model
    phrases = read_lines(cfg.badcase.audience_phrases) + read_lines(cfg.badcase.marketing_phrases)
    base = resolve_base_model(m.base_model, cfg.creator.base_models_dir)
    fields = {k: v for k, v in m.model_dump().items()
              if k in CreativeLLMConfig.__dataclass_fields__}
    if base is not None:
        tokenizer = AutoTokenizer.from_pretrained(base, local_files_only=True)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        layers = m.trainable_layers
        if layers == "auto":
            layers = None if pick_device(cfg.creator.device).startswith("cuda") else 4
        fields |= {"base_model": str(base), "trainable_layers": layers}
    else:
        tokenizer = train_tokenizer(tokenizer_corpus(features, examples, phrases),
                                    m.vocab_size, out)
        fields |= {"base_model": None, "trainable_layers": None}
    stopwords = read_lines(cfg.badcase.stopwords)
    return tokenizer, CreativeLLMConfig(user_dim=0, phrases=phrases, stopwords=stopwords,
                                        **fields)


class EndToEndUsers:
    """U from the User LLM on each user's history (item embeddings of the cycle), with
    gradients; the Item-User Predictor trains beside it."""

    def __init__(self, cfg: Config, cycle_id: str, artifact: Path):
        features = _manifest(cfg, cycle_id, "extract_features", "run extract-features")
        items = _manifest(cfg, cycle_id, "embed_items", "run embed-items")
        hashes, self.items = load_item_embeddings(
            Path(items["outputs"]["item_embeddings"]["path"]))
        index = {h: i for i, h in enumerate(hashes)}
        seqs = pq.read_table(features["outputs"]["user_sequences"]["path"],
                             columns=["user_id", "item_hashes"]).to_pylist()
        self.max_history = cfg.hllm.user_llm.max_history
        self.histories = {r["user_id"]: [index[h] for h in r["item_hashes"] if h in index]
                          for r in seqs}
        self.user_llm = UserLLM.load(artifact / "user_llm")
        self.predictor = ItemUserPredictor.load(artifact / "predictor")

    def __call__(self, user_ids: list[str]) -> torch.Tensor:
        hist = [self.items[torch.as_tensor(self.histories[u][-self.max_history:])]
                for u in user_ids]
        x, mask = left_pad(hist, self.max_history)
        return self.user_llm(x, mask, with_states=False)[1]  # (B, d)


def batch_losses(model: CreativeLLM, batch: list[dict], users: torch.Tensor,
                 item_of: dict[str, torch.Tensor], all_items: torch.Tensor, predictor,
                 cfg: Config, gen: torch.Generator, cls_trainable: bool
                 ) -> dict[str, torch.Tensor]:
    """The four losses on a batch of examples; users (B, d_user)."""
    t = cfg.creator.train
    prompts = [model.prompt_ids(e["original_title"], e["selling_points"], e["query"],
                                e["chosen_selling_points"])[0] for e in batch]
    targets = [model.target_ids(e["title"]) for e in batch]
    gen_loss = model.sequence_loss(users, prompts, targets)

    descriptions = [model.description_ids(e["description"]) for e in batch]
    recon = model.sequence_loss(users, [[model.bos_id, *model.profile_ids]] * len(batch),
                                [d + [model.eos_id] for d in descriptions])

    u = F.normalize(model.user_features(users), dim=-1)  # (B, H)
    v = F.normalize(model.interest_features(descriptions), dim=-1)  # (B, H)
    logits = u @ v.T / t.temperature  # (B, B)
    ids = [e["user_id"] for e in batch]
    same = torch.tensor([[a == b and i != j for j, b in enumerate(ids)]
                         for i, a in enumerate(ids)], device=logits.device)
    align = F.cross_entropy(logits.masked_fill(same, float("-inf")),
                            torch.arange(len(batch), device=logits.device))

    pos = torch.stack([item_of[e["ad_id"]] for e in batch]).to(users.device)  # (B, d_item)
    neg = all_items[torch.randint(0, len(all_items), (len(batch),), generator=gen)].to(
        users.device)
    with torch.set_grad_enabled(cls_trainable and torch.is_grad_enabled()):
        scores = torch.cat([predictor(users, pos), predictor(users, neg)])
        labels = torch.cat([torch.ones(len(batch)), torch.zeros(len(batch))]).to(scores.device)
        cls = F.binary_cross_entropy_with_logits(scores.float(), labels)
    total = t.gen_weight * gen_loss + t.recon_weight * recon + t.align_weight * align
    if cls_trainable:
        total = total + t.cls_weight * cls
    return {"loss": total, "gen": gen_loss, "cls": cls, "align": align, "recon": recon}


def sample_examples(rows: list[dict], limit: int | None, seed: int) -> tuple[list[dict], int]:
    """The training examples, at most `limit` (seeded). Examples whose ad other users got
    a different title for come first, in whole groups: the same ad and prompt with
    different targets is what makes the generation loss fall only by reading U (HLLM-
    Creator §3.4). Returns (rows in their original order, how many are in such groups)."""
    by_ad: dict[str, list[int]] = {}
    for i, e in enumerate(rows):
        by_ad.setdefault(f"{e['ad_id']}\0{e['query']}", []).append(i)
    contrast = [g for g in by_ad.values() if len({rows[i]["title"] for i in g}) > 1]
    n_contrast = sum(map(len, contrast))
    if limit is None or len(rows) <= limit:
        return rows, n_contrast
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    for k in rng.permutation(len(contrast)):
        group = contrast[k]
        if len(keep) + len(group) > limit:
            group = group[: max(limit - len(keep), 0)]
            if len(group) < 2:
                continue
        keep += group
    in_groups = len(keep)
    rest = sorted(set(range(len(rows))) - set(keep))
    if len(keep) < limit and rest:
        keep += [rest[i] for i in rng.choice(len(rest), min(limit - len(keep), len(rest)),
                                             replace=False)]
    return [rows[i] for i in sorted(keep)], in_groups


def _trainable_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The tensors training changes (a frozen pretrained LM is not checkpointed whole)."""
    names = {n for n, p in module.named_parameters() if p.requires_grad}
    return {k: v for k, v in module.state_dict().items() if k in names}


def _checkpoint(path: Path, step: int, modules: dict, optim, sched, gen) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"step": step, **{k: _trainable_state(m) for k, m in modules.items()},
                "optim": optim.state_dict(), "sched": sched.state_dict(),
                "gen": gen.get_state(), "torch_rng": torch.get_rng_state(),
                "np_rng": np.random.get_state(), "py_rng": random.getstate()}, tmp)
    os.replace(tmp, path)  # a checkpoint is whole or absent


def train(cfg: Config, cycle_id: str, out_dir: Path | None = None, resume: bool = True,
          promote_if_none: bool = True, progress: bool = True) -> Path:
    """Train on a cycle's dataset; write a Creative LLM artifact and return its directory
    (its held-out metrics are recorded by `eval_creator.train_and_evaluate`)."""

    t = cfg.creator.train
    seed_everything(t.seed)
    features = _manifest(cfg, cycle_id, "extract_features", "run extract-features")
    dataset = _manifest(cfg, cycle_id, "build_dataset",
                        f"run `creative-factory build-dataset --cycle-id {cycle_id}`")
    users_m = _manifest(cfg, cycle_id, "embed_users", "run embed-users")
    items_m = _manifest(cfg, cycle_id, "embed_items", "run embed-items")
    hllm = require_artifact(cfg, HLLM)
    hllm_version = artifact_version(hllm, HLLM)
    if users_m.get("model_version") not in (None, hllm_version):
        raise UserError(f"cycle {cycle_id}'s user embeddings come from HLLM "
                        f"{users_m['model_version']}, the current HLLM is {hllm_version}: "
                        "re-run embed-users with --force")
    examples = pq.read_table(dataset["outputs"]["examples"]["path"]).to_pylist()
    embeddings = load_user_embeddings(users_m["outputs"]["user_embeddings"]["path"])
    train_rows = [e for e in examples if e["split"] == "train" and e["user_id"] in embeddings]
    train_rows, contrast = sample_examples(train_rows, t.max_examples, t.seed)
    if len(train_rows) < 2:
        raise UserError(f"cycle {cycle_id}'s dataset has {len(train_rows)} training examples "
                        "with a user embedding: nothing to train on")
    data_hash = hashlib.sha256(json.dumps(
        [dataset["outputs"], dataset["finished_at"], users_m["finished_at"]],
        sort_keys=True).encode()).hexdigest()[:16]

    # item embeddings: the example's ad (positive) and random ads (negatives) for L_cls
    hashes, item_table = load_item_embeddings(Path(items_m["outputs"]["item_embeddings"]["path"]))
    row_of = {h: i for i, h in enumerate(hashes)}
    ad_hash = dict(zip(*pq.read_table(features["outputs"]["active_ads"]["path"],
                                      columns=["ad_id", "item_hash"]).to_pydict().values(),
                       strict=True))
    train_rows = [e for e in train_rows if ad_hash.get(e["ad_id"]) in row_of]
    item_of = {e["ad_id"]: item_table[row_of[ad_hash[e["ad_id"]]]] for e in train_rows}

    work = cfg.creator.model_dir / f".training-{cycle_id}-{cfg.section_hash('creator')}-{data_hash}"
    work.mkdir(parents=True, exist_ok=True)
    seed_everything(t.seed)
    tokenizer, config = build_model(cfg, features, examples, work / "tokenizer")
    dim = len(next(iter(embeddings.values())))
    config.user_dim = dim
    config.vocab_size = len(tokenizer)
    model = CreativeLLM(config, tokenizer)
    if cfg.creator.model.center_user:  # the cycle's users are the population centroids come from
        model.set_user_center(torch.as_tensor(np.stack(list(embeddings.values()))))
    user_init_r2 = None
    if cfg.creator.model.user_init == "aligned":
        item_text = dict(zip(*pq.read_table(features["outputs"]["items"]["path"],
                                            columns=["item_hash", "item_text"]).to_pydict()
                             .values(), strict=True))
        known = [h for h in hashes if h in item_text]
        user_init_r2 = model.align_user_projection(
            item_table[torch.as_tensor([row_of[h] for h in known])],
            [item_text[h] for h in known])
        log.info("proj(U) aligned to the LM's token space on %d items (R² %.3f)",
                 len(known), user_init_r2)
    device = pick_device(cfg.creator.device)
    model.to(device)
    trainable = model.freeze_lower_layers()
    end_to_end = t.hllm == "end_to_end"
    users_e2e = EndToEndUsers(cfg, cycle_id, hllm) if end_to_end else None
    predictor = users_e2e.predictor if end_to_end else ItemUserPredictor.load(hllm / "predictor")
    predictor.to(device)
    proj = list(model.user_proj.parameters())
    groups = [{"params": [p for p in model.lm.parameters() if p.requires_grad], "lr": t.lr},
              {"params": proj, "lr": t.proj_lr}]
    modules = {"model": model}
    if end_to_end:
        users_e2e.user_llm.to(device)
        groups.append({"params": list(users_e2e.user_llm.parameters()) +
                       list(predictor.parameters()), "lr": t.hllm_lr})
        modules |= {"user_llm": users_e2e.user_llm, "predictor": predictor}
    else:
        predictor.requires_grad_(False).eval()
    params = [p for g in groups for p in g["params"]]
    optim = torch.optim.AdamW(groups, weight_decay=t.weight_decay)
    steps_per_epoch = math.ceil(len(train_rows) / t.batch_size)
    total_steps = t.epochs * steps_per_epoch

    def lr_at(step: int) -> float:  # linear warm-up, then cosine decay to 10%
        if step < t.warmup_steps:
            return (step + 1) / t.warmup_steps
        progress_ = (step - t.warmup_steps) / max(total_steps - t.warmup_steps, 1)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress_, 1.0)))

    sched = torch.optim.lr_scheduler.LambdaLR(optim, lr_at)
    # bf16 autocast on CUDA (full fine-tuning); the CPU trains in float32
    autocast = torch.autocast(device_type="cuda", dtype=torch.bfloat16,
                              enabled=device.startswith("cuda"))
    gen = torch.Generator().manual_seed(t.seed)
    ckpt = work / "checkpoint.pt"
    step = 0
    if resume and ckpt.is_file():
        state = torch.load(ckpt, weights_only=False)
        for k, m in modules.items():
            m.load_state_dict(state[k], strict=False)
        optim.load_state_dict(state["optim"])
        sched.load_state_dict(state["sched"])
        gen.set_state(state["gen"])
        torch.set_rng_state(state["torch_rng"])
        np.random.set_state(state["np_rng"])
        random.setstate(state["py_rng"])
        step = state["step"]
        log.info("resuming Creative LLM training from step %d", step)

    history: list[dict[str, float]] = []
    started = time.time()
    bar = tqdm(total=total_steps, initial=step, desc="train creator", unit="step",
               disable=not progress)
    sums: dict[str, float] = {}
    tokens = 0
    for epoch in range(step // steps_per_epoch, t.epochs):
        for m in modules.values():
            m.train()
        order = np.random.default_rng([t.seed, epoch]).permutation(len(train_rows))
        for b in range(step - epoch * steps_per_epoch, steps_per_epoch):
            batch = [train_rows[i] for i in order[b * t.batch_size:(b + 1) * t.batch_size]]
            if end_to_end:
                users = users_e2e([e["user_id"] for e in batch]).to(device)
            else:
                users = torch.from_numpy(np.stack([embeddings[e["user_id"]] for e in batch]))
                users = users.to(device)
            with autocast:
                losses = batch_losses(model, batch, users, item_of, item_table, predictor, cfg,
                                      gen, cls_trainable=end_to_end)
            tokens += sum(len(model.prompt_ids(e["original_title"], e["selling_points"],
                                               e["query"], e["chosen_selling_points"])[0])
                          + len(model.target_ids(e["title"]))
                          for e in batch)  # the generation pass; recon/align come on top
            optim.zero_grad()
            losses["loss"].backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optim.step()
            sched.step()
            step += 1
            bar.update(1)
            bar.set_postfix({k: f"{v.item():.3f}" for k, v in losses.items()})
            if not progress and (step % 5 == 0 or step == total_steps):  # logs, in Airflow
                log.info("train creator: step %d/%d, %s", step, total_steps,
                         {k: round(v.item(), 3) for k, v in losses.items()})
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v.item()
            sums["_n"] = sums.get("_n", 0) + 1
            if step % t.checkpoint_every == 0:
                _checkpoint(ckpt, step, modules, optim, sched, gen)
        n = sums.pop("_n", 0)  # mean losses over the epoch's steps run in this process
        history.append({"epoch": epoch, "step": step,
                        **{k: round(v / max(n, 1), 4) for k, v in sums.items()}})
        sums = {}
    bar.close()
    seconds = round(time.time() - started, 1)

    model.cpu().eval()
    digest = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        digest.update(k.encode() + v.detach().cpu().numpy().tobytes())
    version = "creator-" + digest.hexdigest()[:12]
    out = Path(out_dir) if out_dir else cfg.creator.model_dir / version
    staging = out.parent / f".{out.name}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    model.save(staging)
    trained_hllm = None
    if end_to_end:  # the tuned User LLM + predictor: cycles must embed users with them
        users_e2e.user_llm.cpu().save(staging / "hllm" / "user_llm")
        predictor.cpu().save(staging / "hllm" / "predictor")
        trained_hllm = "(fine-tuned end to end, see hllm/)"
    meta: dict[str, Any] = {
        "version": version,
        "hllm_version": hllm_version,
        "hllm_mode": t.hllm,
        "hllm_fine_tuned": trained_hllm,
        "device": device,
        "trained_at": datetime.now(UTC).isoformat(),
        "command": " ".join(["creative-factory", *sys.argv[1:]]) or "train creator",
        "seed": t.seed,
        "cycle_id": cycle_id,
        "training_data_hash": data_hash,
        "examples": len(train_rows),
        "steps": step,
        "seconds": seconds,
        "generation_tokens_per_s": round(tokens / seconds, 1) if seconds else None,
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": trainable,
        "base_model": config.base_model,
        "trainable_layers": config.trainable_layers,
        "user_init": cfg.creator.model.user_init,
        "user_init_r2": round(user_init_r2, 4) if user_init_r2 is not None else None,
        "contrast_examples": contrast,
        "loss_history": history,
        "notes": ("cls loss monitored only: with the HLLM frozen it has no trainable "
                  "parameters") if not end_to_end else "",
        "config": cfg.creator.model_dump(mode="json"),
    }
    write_meta(staging, CREATOR, meta)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(staging, out)
    shutil.rmtree(work, ignore_errors=True)
    if promote_if_none:
        set_current_if_none(cfg, CREATOR, out)
    log.info("Creative LLM %s written to %s in %.0fs", version, out, seconds)
    return out
