"""`creative-factory build-dataset`: CoT training data for the Creative LLM (HLLM-Creator §3.2).

From a cycle's features, for every user with a click history:
1. profile the user's interests from the history (teacher step 1);
2. for up to `examples_per_user` of the user's clicked ads that are active (most recent
   first), with one of the ad's search queries on a `query_share` of them, write a title
   for this user (teacher step 2);
3. keep only titles that pass the hallucination filter: the Badcase Killer's grounding
   check (`jobs.stages.badcase_rules.fabrication_reasons`), and with the chat teacher also the
   LLM check of config/prompts/hallucination.md.

Users are split by a stable hash: `eval_share` of them are held out for `eval creator`
(their examples are written with split = "eval" and never trained on). Writes
`{lake}/cycles/{cycle_id}/build_dataset/`:

    examples.parquet   user_id, split, ad_id, ad_content_hash, original_title, selling_points,
                       brand, category, query, profile (JSON), description,
                       user_information, chosen_selling_points, title, added_chars, teacher
    rejected.parquet   user_id, ad_id, step (profile | title | filter), reason, detail
    _SUCCESS           counts; candidates = examples + rejected (nothing is lost)
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from jobs.platform.config import Config
from jobs.platform.errors import UserError
from jobs.platform.lake import StageOutput, fingerprint_code, read_manifest, run_stage, stage_dir
from jobs.stages import badcase_rules
from jobs.stages.badcase_rules import fabrication_reasons
from jobs.training import teachers
from jobs.training.teachers import Failure, TitleTask, UserHistory, make_teacher

STAGE = "build_dataset"
log = logging.getLogger(__name__)

EXAMPLE_SCHEMA = pa.schema([
    ("user_id", pa.string()), ("split", pa.string()), ("ad_id", pa.string()),
    ("ad_content_hash", pa.string()), ("original_title", pa.string()),
    ("selling_points", pa.list_(pa.string())), ("brand", pa.string()),
    ("category", pa.string()), ("query", pa.string()), ("profile", pa.string()),
    ("description", pa.string()), ("user_information", pa.string()),
    ("chosen_selling_points", pa.list_(pa.string())), ("title", pa.string()),
    ("added_chars", pa.int32()), ("teacher", pa.string()),
])
REJECTED_SCHEMA = pa.schema([
    ("user_id", pa.string()), ("ad_id", pa.string()), ("step", pa.string()),
    ("reason", pa.string()), ("detail", pa.string()),
])


def split_of(user_id: str, eval_share: float) -> str:
    """Stable per user: the same users are held out in every run and every cycle."""
    return "eval" if zlib.crc32(f"creator-split:{user_id}".encode()) % 10_000 < (
        eval_share * 10_000) else "train"


def _features(cfg: Config, cycle_id: str) -> dict:
    m = read_manifest(stage_dir(cfg.lake, cycle_id, "extract_features"))
    if m is None:
        raise UserError(f"cycle {cycle_id} has no committed extract_features stage; run "
                        f"`creative-factory extract-features --cycle-id {cycle_id}` first")
    return m


def load_histories(features: dict, max_users: int | None = None
                   ) -> tuple[list[UserHistory], dict[str, list[str]]]:
    """Users' click histories as item texts (oldest first) and their clicked ad ids
    (most recent first, distinct)."""
    items = pq.read_table(features["outputs"]["items"]["path"],
                          columns=["item_hash", "title", "brand", "category",
                                   "item_text"]).to_pylist()
    by_hash = {r["item_hash"]: r for r in items}
    seqs = pq.read_table(features["outputs"]["user_sequences"]["path"],
                         columns=["user_id", "ad_ids", "item_hashes"]).sort_by("user_id")
    if max_users:
        seqs = seqs.slice(0, max_users)
    histories, clicked = [], {}
    for user, ads, hashes in zip(seqs.column("user_id").to_pylist(),
                                 seqs.column("ad_ids").to_pylist(),
                                 seqs.column("item_hashes").to_pylist(), strict=True):
        rows = [by_hash[h] for h in hashes if h in by_hash]
        histories.append(UserHistory(user, [r["title"] for r in rows],
                                     [r["brand"] for r in rows], [r["category"] for r in rows],
                                     [r["item_text"] for r in rows]))
        clicked[user] = list(dict.fromkeys(reversed(ads)))
    return histories, clicked


def build(cfg: Config, features: dict, teacher, progress: bool = True) -> dict[str, Any]:
    """Run the three steps; returns the examples and rejected rows (as lists of dicts)."""
    from tqdm import tqdm

    d = cfg.creator.dataset
    histories, clicked = load_histories(features, d.max_users)
    if hasattr(teacher, "fit_catalog"):  # base rates of words over the cycle's items
        teacher.fit_catalog(pq.read_table(features["outputs"]["items"]["path"],
                                          columns=["item_text"]).column("item_text").to_pylist())
    ads = {r["ad_id"]: r for r in pq.read_table(features["outputs"]["active_ads"]["path"],
                                                 columns=["ad_id", "title", "selling_points",
                                                          "brand", "category",
                                                          "content_hash"]).to_pylist()}
    queries: dict[str, list[str]] = {}
    for r in pq.read_table(features["outputs"]["ad_queries"]["path"],
                           columns=["ad_id", "query", "query_rank"]).sort_by(
            "query_rank").to_pylist():
        queries.setdefault(r["ad_id"], []).append(r["query"])

    examples: list[dict] = []
    rejected: list[dict] = []
    chunk = 256  # users per teacher call: bounded memory, visible progress
    bar = tqdm(total=len(histories), desc="build dataset", unit="user", disable=not progress)
    for start in range(0, len(histories), chunk):
        part = histories[start:start + chunk]
        profiles = teacher.profiles(part)
        tasks, meta = [], []
        for h, prof in zip(part, profiles, strict=True):
            targets = [a for a in clicked[h.user_id] if a in ads][: d.examples_per_user]
            if isinstance(prof, Failure):
                for ad_id in targets or [None]:
                    rejected.append({"user_id": h.user_id, "ad_id": ad_id, "step": "profile",
                                     "reason": prof.reason, "detail": prof.detail})
                continue
            if not targets:
                rejected.append({"user_id": h.user_id, "ad_id": None, "step": "profile",
                                 "reason": "no_active_clicked_ad",
                                 "detail": "none of the user's clicked ads is active"})
                continue
            rng = random.Random(f"{d.seed}:{h.user_id}")
            for ad_id in targets:
                ad = ads[ad_id]
                q = queries.get(ad_id) or []
                query = rng.choice(q) if q and rng.random() < d.query_share else None
                tasks.append(TitleTask(prof, h, ad["title"], list(ad["selling_points"] or []),
                                       query, ad["category"]))
                meta.append((h.user_id, ad))
        drafts = teacher.titles(tasks)
        llm_checks = (teacher.hallucination_check(tasks, [x.title for x in drafts
                                                          if not isinstance(x, Failure)])
                      if hasattr(teacher, "hallucination_check") else None)
        checks = iter(llm_checks or [])
        for task, (user_id, ad), draft in zip(tasks, meta, drafts, strict=True):
            base = {"user_id": user_id, "ad_id": ad["ad_id"]}
            if isinstance(draft, Failure):
                rejected.append({**base, "step": "title", "reason": draft.reason,
                                 "detail": draft.detail})
                continue
            llm = next(checks) if llm_checks is not None else []
            reasons = fabrication_reasons(draft.title, task.original_title,
                                          task.selling_points, task.query)
            if not draft.title.strip():
                reasons = ["empty_title"]
            added = len(draft.title) - len(task.original_title)
            if added > cfg.creator.teacher.max_added_chars:
                reasons.append("over_length_budget")
            if isinstance(llm, Failure):
                reasons.append(f"check_{llm.reason}")
            elif llm:
                reasons.append("llm_new_information")
            if reasons:
                rejected.append({**base, "step": "filter", "reason": reasons[0],
                                 "detail": f"{draft.title!r}: {', '.join(reasons)}"})
                continue
            examples.append({
                **base, "split": split_of(user_id, d.eval_share),
                "ad_content_hash": ad["content_hash"], "original_title": task.original_title,
                "selling_points": task.selling_points, "brand": ad["brand"],
                "category": ad["category"], "query": task.query,
                "profile": task.profile.as_json(), "description": task.profile.description,
                "user_information": draft.user_information,
                "chosen_selling_points": list(draft.selling_points), "title": draft.title,
                "added_chars": added, "teacher": teacher.name})
        bar.update(len(part))
    bar.close()
    return {"examples": examples, "rejected": rejected, "users": len(histories)}


def run(cfg: Config, cycle_id: str, force: bool = False, progress: bool = True,
        teacher=None) -> dict[str, Any]:
    """The stage: build (or skip when up to date) and commit with counts."""
    features = _features(cfg, cycle_id)
    t = cfg.creator.teacher
    inputs = {"features": {k: features["outputs"][k] for k in
                           ("user_sequences", "items", "active_ads", "ad_queries")},
              "features_finished": features["finished_at"],
              # by content: an edited lexicon rebuilds the data
              "lexicons": {str(p): hashlib.sha256(Path(p).read_bytes()).hexdigest()[:16]
                           for p in (cfg.badcase.audience_phrases, cfg.badcase.marketing_phrases,
                                     cfg.creator.teacher.activities) if Path(p).is_file()},
              "code": fingerprint_code(Path(__file__), Path(teachers.__file__),
                                       Path(badcase_rules.__file__))}
    if t.kind == "chat":
        inputs["prompts"] = fingerprint_code(cfg.creator.prompts_dir)
    # only what shapes the data: retraining settings (model, train, eval) do not rebuild it
    config_hash = hashlib.sha256(json.dumps(
        [cfg.creator.teacher.model_dump(mode="json", exclude={"cache_dir", "timeout_s",
                                                                "concurrency"}),
         cfg.creator.dataset.model_dump(mode="json")], sort_keys=True).encode()).hexdigest()[:16]

    def build_stage(out: Path) -> StageOutput:
        result = build(cfg, features, teacher or make_teacher(cfg), progress)
        ex, rej = result["examples"], result["rejected"]
        pq.write_table(pa.Table.from_pylist(ex, EXAMPLE_SCHEMA), out / "examples.parquet")
        pq.write_table(pa.Table.from_pylist(rej, REJECTED_SCHEMA), out / "rejected.parquet")
        filtered = [r for r in rej if r["step"] == "filter"]
        counts = {
            "users": result["users"],
            "examples": len(ex),
            "train_examples": sum(e["split"] == "train" for e in ex),
            "eval_examples": sum(e["split"] == "eval" for e in ex),
            "query_aware": sum(e["query"] is not None for e in ex),
            "with_audience_phrase": sum(bool(e["user_information"]) for e in ex),
            "with_selling_point": sum(bool(e["chosen_selling_points"]) for e in ex),
            "rejected": len(rej),
            "rejected_by_reason": dict(Counter(f"{r['step']}:{r['reason']}" for r in rej)),
            # the filter's pass rate over titles the teacher wrote
            "filter_pass_rate": round(len(ex) / max(len(ex) + len(filtered), 1), 4),
            "titles_written": len(ex) + len(filtered) + sum(r["step"] == "title" for r in rej),
        }
        log.info("%s: %s", STAGE, counts)
        return StageOutput({"examples": {"path": "examples.parquet", "rows": len(ex)},
                            "rejected": {"path": "rejected.parquet", "rows": len(rej)}},
                           {"counts": counts, "teacher": t.kind})

    return run_stage(cfg, cycle_id, STAGE, inputs=inputs, config_hash=config_hash,
                     build=build_stage, force=force)
