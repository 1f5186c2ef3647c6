"""Promotion: a trained model version becomes CURRENT only when it is at least as good as
the current one, both evaluated on the same cycle. The decision is kept beside the
candidate (`promotion.json`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jobs.evaluation import eval_creator, eval_hllm
from jobs.platform.config import Config
from jobs.platform.registry import CREATOR, HLLM, ModelFamily, current_artifact, set_current


def _promote(cfg: Config, family: ModelFamily, candidate: Path, cycle_id: str,
             scores: Callable[[Path], dict[str, float]],
             better: Callable[[dict, dict], bool], **rule: Any) -> dict:
    current = current_artifact(cfg, family)
    new = scores(candidate)
    old = scores(current) if current is not None else None
    promoted = old is None or better(new, old)
    decision = {"family": family.name, "candidate": candidate.name,
                "current": current.name if current else None, "cycle_id": cycle_id,
                "candidate_scores": new, "current_scores": old, **rule, "promoted": promoted}
    (candidate / "promotion.json").write_text(json.dumps(decision, indent=2))
    if promoted:
        set_current(cfg, family, candidate)
    return decision


def promote_hllm(cfg: Config, candidate: Path, cycle_id: str) -> dict:
    """Promote when the candidate's Recall@10 on the cycle's hold-out is at least CURRENT's."""
    def scores(artifact: Path) -> dict[str, float]:
        m = eval_hllm.evaluate_artifact(cfg, artifact, cycle_id)
        return {"recall@10": m["user_llm"]["recall@10"]}

    return _promote(cfg, HLLM, Path(candidate), cycle_id, scores,
                    lambda new, old: new["recall@10"] >= old["recall@10"],
                    rule="recall@10 >= current")


def promote_creator(cfg: Config, candidate: Path, cycle_id: str,
                    grounding_tolerance: float = 0.02) -> dict:
    """Promote when, on the cycle's held-out users, the candidate's cross-user fidelity
    (its titles fit the users they were written for: jobs/stages/personalization.py) and
    its personalization advantage are at least CURRENT's, and its grounding pass rate is no
    more than `grounding_tolerance` below it."""
    def scores(artifact: Path) -> dict[str, float]:
        m = eval_creator.evaluate_artifact(cfg, artifact, cycle_id)
        fidelity = m["fidelity"]["users"]["generated"]["fidelity"]
        return {"fidelity": 0.5 if fidelity is None else fidelity,  # no pair: chance
                "advantage": m["personalization"]["advantage"],
                "grounding_pass_rate": m["grounding_pass_rate"]}

    def better(new: dict, old: dict) -> bool:
        return (new["fidelity"] >= old["fidelity"]
                and new["advantage"] >= old["advantage"] and new["grounding_pass_rate"]
                >= old["grounding_pass_rate"] - grounding_tolerance)

    return _promote(cfg, CREATOR, Path(candidate), cycle_id, scores, better,
                    rule="fidelity >= current, advantage >= current and grounding >= "
                         "current - tolerance",
                    grounding_tolerance=grounding_tolerance)
