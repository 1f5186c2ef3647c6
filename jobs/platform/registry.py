"""The model registry: versioned artifacts of both model families and their `CURRENT`.

An artifact is a directory `{model_dir}/{version}/` holding a metadata file (its version,
configs, training-data hash, metrics) beside the model files. `{model_dir}/CURRENT` names
the version cycles run with.

    HLLM           {hllm.model_dir}/{version}/hllm.json, item_llm.json, user_llm/, predictor/
    Creative LLM   {creator.model_dir}/{version}/creator.json, lm/, projection ...

The Item LLM has its own version (its config + weights), which keys the item-embedding
cache: retraining the User LLM does not re-embed items. `match_ads` puts the Creative
LLM's version into every `request_id`, so a new Creative LLM regenerates the library and
an unchanged one reuses earlier outputs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from jobs.platform.config import Config
from jobs.platform.errors import UserError

CURRENT = "CURRENT"


@dataclass(frozen=True)
class ModelFamily:
    name: str  # for messages
    section: str  # the config section whose `model_dir` holds the artifacts
    meta: str  # the metadata file that marks a complete artifact
    train_command: str  # what an operator runs to make the first one

    def model_dir(self, cfg: Config) -> Path:
        return getattr(cfg, self.section).model_dir


HLLM = ModelFamily("HLLM", "hllm", "hllm.json",
                   "creative-factory train hllm --cycle-id <cycle>")
CREATOR = ModelFamily("Creative LLM", "creator", "creator.json",
                      "creative-factory build-dataset --cycle-id <cycle> && "
                      "creative-factory train creator --cycle-id <cycle>")


def current_artifact(cfg: Config, family: ModelFamily) -> Path | None:
    """The artifact CURRENT names (None without CURRENT)."""
    pointer = family.model_dir(cfg) / CURRENT
    if not pointer.is_file():
        return None
    path = family.model_dir(cfg) / pointer.read_text().strip()
    if not (path / family.meta).is_file():
        raise UserError(f"{pointer} names {path.name}, which is not a complete {family.name} "
                        "artifact")
    return path


def require_artifact(cfg: Config, family: ModelFamily) -> Path:
    path = current_artifact(cfg, family)
    if path is None:
        raise UserError(f"no trained {family.name} in {family.model_dir(cfg)} (no {CURRENT} "
                        f"file): run `{family.train_command}` first")
    return path


def read_meta(artifact: Path, family: ModelFamily) -> dict[str, Any]:
    return json.loads((Path(artifact) / family.meta).read_text())


def write_meta(artifact: Path, family: ModelFamily, meta: dict[str, Any]) -> None:
    """Replace the metadata file whole (readers never see half of it)."""
    tmp = Path(artifact) / f".{family.meta}.tmp"
    tmp.write_text(json.dumps(meta, indent=2))
    tmp.replace(Path(artifact) / family.meta)


def artifact_version(artifact: Path, family: ModelFamily) -> str:
    return read_meta(artifact, family)["version"]


def set_current(cfg: Config, family: ModelFamily, artifact: Path) -> None:
    """Point CURRENT at `artifact` (atomic: readers see the old or the new name)."""
    tmp = family.model_dir(cfg) / f".{CURRENT}.tmp"
    tmp.write_text(Path(artifact).name + "\n")
    tmp.replace(family.model_dir(cfg) / CURRENT)


def set_current_if_none(cfg: Config, family: ModelFamily, artifact: Path) -> bool:
    """A first model becomes CURRENT; later ones wait for promotion."""
    if (family.model_dir(cfg) / CURRENT).is_file():
        return False
    set_current(cfg, family, artifact)
    return True


# --- the Item LLM (frozen by default: its weights come from a package) ---------------------

def item_llm_config(cfg: Config):
    from models.item_llm import ItemLLMConfig  # torch loads only when an Item LLM is needed

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
