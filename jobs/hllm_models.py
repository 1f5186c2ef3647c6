"""Loading and versioning the HLLM artifact a cycle uses.

An HLLM artifact is a directory `{hllm.model_dir}/{version}/`:

    hllm.json        configs, seed, command, training-data hash, metrics
    item_llm.json    the Item LLM config (weights: the packaged base, or item_llm/ when fine-tuned)
    user_llm/        User LLM (safetensors + config)
    predictor/       Item-User Predictor (safetensors + config)

`{hllm.model_dir}/CURRENT` names the version cycles use. The Item LLM has its own version
(its config + weights), which keys the item-embedding cache: retraining the User LLM
does not re-embed items.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from jobs.config import Config
from jobs.errors import UserError
from jobs.model_pointer import CURRENT, current_dir, point_at


def item_llm_config(cfg: Config):
    from models.item_llm import ItemLLMConfig

    return ItemLLMConfig(**cfg.hllm.item_llm.model_dump())


def _hash_dir(path: Path, h) -> None:
    for f in sorted(Path(path).rglob("*")):
        if f.is_file() and f.suffix in (".json", ".safetensors", ".txt", ".model"):
            h.update(f.name.encode())
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)


def item_model_version(cfg: Config, artifact: Path | None = None) -> str:
    """Version of the Item LLM: its config and weights (fine-tuned ones when present)."""
    from models.item_llm import resolve_model_path

    ic = item_llm_config(cfg)
    h = hashlib.sha256(json.dumps(asdict(ic), sort_keys=True).encode())
    tuned = artifact / "item_llm" if artifact else None
    _hash_dir(tuned if tuned and tuned.is_dir() else resolve_model_path(ic.base_model), h)
    return "item-" + h.hexdigest()[:12]


def load_item_llm(cfg: Config, artifact: Path | None = None):
    from models.item_llm import ItemLLM

    tuned = artifact / "item_llm" if artifact else None
    if tuned and tuned.is_dir():
        return ItemLLM.load(tuned)
    return ItemLLM(item_llm_config(cfg))


def current_artifact(cfg: Config) -> Path | None:
    return current_dir(cfg.hllm.model_dir, "hllm.json", "HLLM")


def require_artifact(cfg: Config) -> Path:
    path = current_artifact(cfg)
    if path is None:
        raise UserError(f"no trained HLLM in {cfg.hllm.model_dir} (no {CURRENT} file): run "
                        "`creative-factory train hllm --cycle-id <cycle>` first")
    return path


def artifact_version(path: Path) -> str:
    return json.loads((Path(path) / "hllm.json").read_text())["version"]


def latest_feature_cycle(cfg: Config) -> str:
    """The most recent cycle with committed features (what training uses by default)."""
    cycles = sorted(p.parent.parent.name for p in
                    (cfg.lake / "cycles").glob("*/extract_features/_SUCCESS"))
    if not cycles:
        raise UserError(f"no cycle in {cfg.lake / 'cycles'} has committed features yet")
    return cycles[-1]


def promote_if_better(cfg: Config, candidate: Path, cycle_id: str) -> dict:
    """Point CURRENT at `candidate` when its Recall@10 is at least the current version's,
    both evaluated on the same cycle's hold-out. The decision is kept beside the model."""
    from jobs.eval_hllm import evaluate_artifact

    def recall(artifact: Path) -> float:
        return evaluate_artifact(cfg, artifact, cycle_id)["user_llm"]["recall@10"]

    current = current_artifact(cfg)
    new_score = recall(candidate)
    old_score = recall(current) if current is not None else None
    promoted = old_score is None or new_score >= old_score
    decision = {"candidate": candidate.name, "current": current.name if current else None,
                "cycle_id": cycle_id, "candidate_recall@10": new_score,
                "current_recall@10": old_score, "promoted": promoted}
    (candidate / "promotion.json").write_text(json.dumps(decision, indent=2))
    if promoted:
        point_at(cfg.hllm.model_dir, candidate)
    return decision
