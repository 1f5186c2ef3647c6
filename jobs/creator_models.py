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
from jobs.model_pointer import CURRENT, current_dir, point_at

META = "creator.json"


def current_artifact(cfg: Config) -> Path | None:
    return current_dir(cfg.creator.model_dir, META, "Creative LLM")


def require_artifact(cfg: Config) -> Path:
    path = current_artifact(cfg)
    if path is None:
        raise UserError(f"no trained Creative LLM in {cfg.creator.model_dir} (no {CURRENT} "
                        "file): run `creative-factory train creator` first")
    return path


def artifact_version(path: Path) -> str:
    return json.loads((Path(path) / META).read_text())["version"]


def set_current(cfg: Config, artifact: Path) -> None:
    """Point CURRENT at `artifact` (atomic: readers see the old or the new name)."""
    point_at(cfg.creator.model_dir, artifact)


def promote_if_better(cfg: Config, candidate: Path, cycle_id: str,
                      grounding_tolerance: float = 0.02) -> dict:
    """Point CURRENT at `candidate` when, on the same cycle's held-out users, its
    personalization advantage is at least the current version's and its grounding pass rate
    is no more than `grounding_tolerance` below it. The decision is kept beside the model."""
    from jobs.eval_creator import evaluate_artifact

    def scores(artifact: Path) -> dict:
        m = evaluate_artifact(cfg, artifact, cycle_id)
        return {"advantage": m["personalization"]["advantage"],
                "grounding_pass_rate": m["grounding_pass_rate"]}

    current = current_artifact(cfg)
    new = scores(candidate)
    old = scores(current) if current is not None else None
    promoted = old is None or (
        new["advantage"] >= old["advantage"]
        and new["grounding_pass_rate"] >= old["grounding_pass_rate"] - grounding_tolerance)
    decision = {"candidate": candidate.name, "current": current.name if current else None,
                "cycle_id": cycle_id, "candidate_scores": new, "current_scores": old,
                "grounding_tolerance": grounding_tolerance, "promoted": promoted}
    (candidate / "promotion.json").write_text(json.dumps(decision, indent=2))
    if promoted:
        set_current(cfg, candidate)
    return decision


def latest_dataset_cycle(cfg: Config) -> str:
    """The most recent cycle with a committed build_dataset stage."""
    cycles = sorted(p.parent.parent.name for p in
                    (cfg.lake / "cycles").glob("*/build_dataset/_SUCCESS"))
    if not cycles:
        raise UserError(f"no cycle in {cfg.lake / 'cycles'} has a built dataset yet: run "
                        "`creative-factory build-dataset --cycle-id <cycle>` first")
    return cycles[-1]
