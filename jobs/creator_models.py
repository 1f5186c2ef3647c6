"""Loading and versioning the Creative LLM artifact a cycle uses.

A Creative LLM artifact is a directory `{creator.model_dir}/{version}/` holding
`creator.json` (its version, configs, training-data hash, metrics) beside the model files.
`{creator.model_dir}/CURRENT` names the version cycles use; `match_ads` puts that version
into every `request_id`, so a new Creative LLM regenerates the library and an unchanged one
reuses earlier outputs.
"""

from __future__ import annotations

import json
from pathlib import Path

from jobs.config import Config
from jobs.errors import UserError

CURRENT = "CURRENT"
META = "creator.json"


def current_artifact(cfg: Config) -> Path | None:
    pointer = cfg.creator.model_dir / CURRENT
    if not pointer.is_file():
        return None
    path = cfg.creator.model_dir / pointer.read_text().strip()
    if not (path / META).is_file():
        raise UserError(f"{pointer} names {path.name}, which is not a complete Creative LLM "
                        "artifact")
    return path


def require_artifact(cfg: Config) -> Path:
    path = current_artifact(cfg)
    if path is None:
        raise UserError(f"no trained Creative LLM in {cfg.creator.model_dir} (no {CURRENT} "
                        "file): run `creative-factory train creator` first")
    return path


def artifact_version(path: Path) -> str:
    return json.loads((Path(path) / META).read_text())["version"]
