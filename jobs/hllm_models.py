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

CURRENT = "CURRENT"


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
    pointer = cfg.hllm.model_dir / CURRENT
    if not pointer.is_file():
        return None
    path = cfg.hllm.model_dir / pointer.read_text().strip()
    if not (path / "hllm.json").is_file():
        raise UserError(f"{pointer} names {path.name}, which is not a complete HLLM artifact")
    return path


def require_artifact(cfg: Config) -> Path:
    path = current_artifact(cfg)
    if path is None:
        raise UserError(f"no trained HLLM in {cfg.hllm.model_dir} (no {CURRENT} file): run "
                        "`creative-factory train hllm --cycle-id <cycle>` first")
    return path


def artifact_version(path: Path) -> str:
    return json.loads((Path(path) / "hllm.json").read_text())["version"]
