"""`creative-factory eval creator`: how grounded, personal and varied the Creative LLM is.

On the held-out users of the cycle's dataset (split = eval, never trained on), each with
their own embedding U from `embed_users`:
* grounding pass rate: share of generated titles with no fabricated content, by the same
  check as the training-data filter and the Badcase Killer
  (`jobs.stages.badcase_rules.fabrication_reasons`);
* personalization proxy (GSB): Good when the generated title is closer than the original
  title to the user's interest description in the Item LLM's embedding space (by more than
  `same_margin`), Bad when farther, Same otherwise; advantage = (G − B) / (G + S + B).
  The teacher's own titles are scored the same way, as the reference;
* control: the same requests generated with another held-out user's U (a permutation):
  its advantage shows how much of the personalization comes from U rather than the ad;
* distinct-n across clusters of the same ad: k-means over the cycle's user embeddings,
  every cluster centre × `ads` ads (query-free), distinct-1/2 = unique n-grams / n-grams
  over one ad's titles, averaged over ads; and, when the cycle has a `generate` stage, the
  same over its query-free generations;
* personalization that fits (jobs/stages/personalization.py), beside its controls:
  cross-user fidelity over pairs of held-out users shown the same ad (each user's title
  against what each user clicked, TF-IDF over item texts) for the generated titles, the
  same requests with shuffled U (control) and the teacher's titles (ceiling); and over the
  cluster grid, cross-cluster fidelity and distinct titles per ad, with the cluster
  centres shuffled as the control;
* LLM-judge GSB when a judge endpoint is configured (CF_JUDGE_URL, CF_JUDGE_MODEL): the
  generated and the original title asked in both orders (config/prompts/judge.md);
  inconsistent answers count as Same.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jobs.platform.config import Config
from jobs.platform.errors import UserError
from jobs.platform.lake import read_manifest, stage_dir
from jobs.platform.registry import CREATOR, read_meta, write_meta
from jobs.stages.badcase_rules import degenerate_reasons, fabrication_reasons
from jobs.stages.generate import (
    DEAD_END,
    ENDED,
    OVER_LENGTH,
    finish_title,
    make_engine,
    request_seed,
)
from jobs.stages.personalization import CycleClicks, cross_cluster_fidelity, distinct_titles
from jobs.stages.point_plan import cycle_planner
from jobs.training import train_creator
from jobs.training.teachers import (
    ChatClient,
    ChatEndpoint,
    Failure,
    default_embedder,
    load_prompt,
    render_prompt,
)
from jobs.training.train_creator import load_user_embeddings

log = logging.getLogger(__name__)


def gsb(gains: np.ndarray, margin: float) -> dict[str, Any]:
    good, bad = int((gains > margin).sum()), int((gains < -margin).sum())
    same = len(gains) - good - bad
    return {"good": good, "same": same, "bad": bad,
            "advantage": round((good - bad) / max(len(gains), 1), 4)}


def distinct_n(titles: list[str], n: int) -> float | None:
    """Unique word n-grams / all word n-grams over a group of titles."""
    grams = [tuple(w[i:i + n]) for w in (t.lower().split() for t in titles)
             for i in range(len(w) - n + 1)]
    return len(set(grams)) / len(grams) if grams else None


def _distinct_by_ad(rows: list[tuple[str, str]]) -> dict[str, Any]:
    by_ad: dict[str, list[str]] = defaultdict(list)
    for ad, title in rows:
        by_ad[ad].append(title)
    groups = [t for t in by_ad.values() if len(t) > 1]
    out: dict[str, Any] = {"ads": len(groups)}
    for n in (1, 2):
        vals = [v for v in (distinct_n(g, n) for g in groups) if v is not None]
        out[f"distinct_{n}"] = round(float(np.mean(vals)), 4) if vals else None
    out["unique_titles_share"] = round(float(np.mean([len(set(g)) / len(g) for g in groups])),
                                       4) if groups else None
    return out


def _as_stage(output: tuple[str, int, str], max_chars: int) -> str:
    """A title as the generate stage keeps it (`finish_title`): "" when it is dropped."""
    title, n_tokens, status = output
    return finish_title(title, n_tokens, status, 0, max_chars)[0] or ""


def _paired_first(rows: list[dict], n: int) -> list[dict]:
    """Up to `n` held-out rows, ads shown to several users first (fidelity compares the
    titles two users got for the same ad), in the dataset's order otherwise."""
    by_ad: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_ad[r["ad_id"]].append(r)
    groups = sorted(by_ad.values(), key=lambda g: len(g) < 2)  # stable: pairs first
    return [r for g in groups for r in g][:n]


def _fidelity(cfg: Config, cycle_id: str, rows: list[dict], titles: list[str],
              shuffled: list[str], grid: list, d_out: list, d_shuf: list,
              cluster_of: dict[str, int]) -> dict[str, Any]:
    """Fidelity of the generated titles beside the controls and the teacher, per user pair
    and per cluster pair; distinct titles across the grid's clusters."""
    fe = read_manifest(stage_dir(cfg.lake, cycle_id, "extract_features"))
    clicks = CycleClicks(fe["outputs"]["items"]["path"], fe["outputs"]["user_sequences"]["path"])
    space = clicks.space
    by_user = clicks.interests({r["user_id"]: r["user_id"] for r in rows})
    by_cluster = clicks.interests(cluster_of)

    def per_user(ts: list[str]) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = defaultdict(dict)
        for r, t in zip(rows, ts, strict=True):
            if t:  # a dropped title has nothing to compare
                out[r["ad_id"]][r["user_id"]] = t
        return out

    def per_cluster(outs: list) -> dict[str, dict[int, str]]:
        max_chars = cfg.library.max_title_chars
        out: dict[str, dict[int, str]] = defaultdict(dict)
        for (a, c), o in zip(grid, outs, strict=True):
            if (t := _as_stage(o, max_chars)):
                out[a["ad_id"]][c] = t
        return out

    grid_gen, grid_shuf = per_cluster(d_out), per_cluster(d_shuf)
    return {
        "users": {"generated": cross_cluster_fidelity(per_user(titles), by_user, space),
                  "shuffled_users": cross_cluster_fidelity(per_user(shuffled), by_user, space),
                  "teacher": cross_cluster_fidelity(per_user([r["title"] for r in rows]),
                                                    by_user, space)},
        "clusters": {"generated": cross_cluster_fidelity(grid_gen, by_cluster, space),
                     "shuffled_centres": cross_cluster_fidelity(grid_shuf, by_cluster, space)},
        "distinct": {"generated": distinct_titles({a: list(v.values())
                                                   for a, v in grid_gen.items()}),
                     "shuffled_centres": distinct_titles({a: list(v.values())
                                                          for a, v in grid_shuf.items()})},
    }


def _grid_titles(engine, model, centres: np.ndarray, grid: list[tuple[dict, int]], plan,
                 seeds: list[int], bind: bool) -> list[tuple[str, int, str]]:
    """Titles for (ad, centre) pairs, each prompted with the centre's plan (and bound to it
    when `bind`, generate.plan_in_title)."""
    plans = [plan(a["original_title"], a["selling_points"], None, c) for a, c in grid]
    prompts = [model.prompt_ids(a["original_title"], a["selling_points"], None, p)[0]
               for (a, _), p in zip(grid, plans, strict=True)]
    sources = [(a["original_title"], a["selling_points"], None, p if bind else None)
               for (a, _), p in zip(grid, plans, strict=True)]
    return engine.generate(centres[[c for _, c in grid]], prompts, seeds, sources=sources)


def evaluate_artifact(cfg: Config, artifact: Path, cycle_id: str, backend: str | None = None,
                      progress: bool = False) -> dict[str, Any]:
    e = cfg.creator.eval
    backend = backend or e.backend
    dataset = read_manifest(stage_dir(cfg.lake, cycle_id, "build_dataset"))
    users_m = read_manifest(stage_dir(cfg.lake, cycle_id, "embed_users"))
    if dataset is None or users_m is None:
        raise UserError(f"cycle {cycle_id} needs build_dataset and embed_users to evaluate")
    embeddings = load_user_embeddings(users_m["outputs"]["user_embeddings"]["path"])
    rows = _paired_first([r for r in pq.read_table(dataset["outputs"]["examples"]["path"])
                          .to_pylist() if r["split"] == "eval" and r["user_id"] in embeddings],
                         e.max_examples)
    if not rows:
        raise UserError(f"cycle {cycle_id}'s dataset has no held-out example to evaluate on")
    max_chars = cfg.library.max_title_chars
    engine = make_engine(cfg, Path(artifact), backend)
    try:
        model = engine.model
        # the teacher's chosen claims are the user's plan (what a cycle's planner gives a
        # cluster); the control below keeps the plan and swaps U: what U adds beyond it
        prompts = [model.prompt_ids(r["original_title"], r["selling_points"], r["query"],
                                    r["chosen_selling_points"])[0] for r in rows]
        users = np.stack([embeddings[r["user_id"]] for r in rows])
        seeds = [request_seed(cfg.generate.seed, f"{r['user_id']}:{r['ad_id']}") for r in rows]
        bind = cfg.generate.plan_in_title  # the plan binds the decoder, as in the stage
        sources = [(r["original_title"], r["selling_points"], r["query"],
                    r["chosen_selling_points"] if bind else None) for r in rows]
        outputs = engine.generate(users, prompts, seeds, progress=progress, sources=sources)
        titles = [_as_stage(o, max_chars) for o in outputs]  # as the stage keeps them ("": dropped)
        # control: the same requests with another held-out user's U. If personalization
        # came from the ad text alone, this would score as well as the real users.
        perm = np.random.default_rng(0).permutation(len(rows))
        shuffled = [_as_stage(o, max_chars) for o in engine.generate(
            users[perm], prompts, seeds, sources=sources)]

        # distinct-n: cluster centres of the cycle's users x a sample of ads
        from sklearn.cluster import KMeans

        user_ids = list(embeddings)
        all_users = np.stack([embeddings[u] for u in user_ids])
        k = min(e.clusters, len(all_users))
        km = KMeans(k, n_init=3, random_state=cfg.creator.dataset.seed).fit(all_users)
        centres = km.cluster_centers_.astype(np.float32)
        ads = list({r["ad_id"]: r for r in rows}.values())[: e.ads]
        grid = [(a, c) for a in ads for c in range(k)]
        # each centre's plan from its users' clicks, as match_ads gives a cluster's
        plan = cycle_planner(
            cfg, read_manifest(stage_dir(cfg.lake, cycle_id, "extract_features")),
            pa.table({"user_id": user_ids, "cluster_id": pa.array(km.labels_, pa.int64())}),
            dict(enumerate(centres)))
        grid_seeds = [request_seed(cfg.generate.seed, f"{a['ad_id']}:{c}") for a, c in grid]
        # control: each cluster's slot filled with another cluster's centre and plan
        swap = np.roll(np.arange(k), 1)
        d_out = _grid_titles(engine, model, centres, grid, plan, grid_seeds, bind)
        d_shuf = _grid_titles(engine, model, centres, [(a, int(swap[c])) for a, c in grid],
                              plan, grid_seeds, bind)
    finally:
        engine.close()

    # a dropped title (no end within the budget) counts as failing grounding
    passed = [bool(t) and not fabrication_reasons(t, r["original_title"], r["selling_points"],
                                                  r["query"])
              for t, r in zip(titles, rows, strict=True)]
    kept = [t for t in titles if t]
    embed = default_embedder(cfg)
    prof = embed([r["description"] for r in rows])
    orig = embed([r["original_title"] for r in rows])
    gen = embed([t or " " for t in titles])
    teach = embed([r["title"] for r in rows])
    other = embed([t or " " for t in shuffled])
    base = (orig * prof).sum(1)
    result: dict[str, Any] = {
        "examples": len(rows), "backend": backend,
        "grounding_pass_rate": round(float(np.mean(passed)), 4),
        "dropped_over_length": round(float(np.mean([o[2] == OVER_LENGTH for o in outputs])), 4),
        "dropped_dead_end": round(float(np.mean([o[2] == DEAD_END for o in outputs])), 4),
        "degenerate_rate": round(float(np.mean([bool(degenerate_reasons(t)) for t in kept])), 4)
        if kept else None,
        "personalization": gsb((gen * prof).sum(1) - base, e.same_margin),
        "teacher_personalization": gsb((teach * prof).sum(1) - base, e.same_margin),
        "shuffled_users_personalization": gsb((other * prof).sum(1) - base, e.same_margin),
        "changed_by_user_share": round(float(np.mean([a != b for a, b in
                                                      zip(titles, shuffled, strict=True)])), 4),
        "same_as_original": round(float(np.mean([t == r["original_title"]
                                                 for t, r in zip(titles, rows, strict=True)])),
                                  4),
        "same_as_teacher": round(float(np.mean([t == r["title"]
                                                for t, r in zip(titles, rows, strict=True)])), 4),
        "mean_output_tokens": round(float(np.mean([n for _, n, _ in outputs])), 2),
        "distinct_across_clusters": {"clusters": k, **_distinct_by_ad(
            [(a["ad_id"], _as_stage(o, max_chars)) for (a, _), o in zip(grid, d_out,
                                                                         strict=True)
             if o[2] == ENDED])},
        "fidelity": _fidelity(cfg, cycle_id, rows, titles, shuffled, grid, d_out, d_shuf,
                              dict(zip(user_ids, km.labels_.tolist(), strict=True))),
        "examples_shown": [{"original": r["original_title"], "query": r["query"],
                            "generated": t, "teacher": r["title"]}
                           for t, r in list(zip(titles, rows, strict=True))[:5]],
    }
    gen_m = read_manifest(stage_dir(cfg.lake, cycle_id, "generate"))
    if gen_m is not None:
        t = pq.read_table(gen_m["outputs"]["generations"]["path"],
                          columns=["ad_id", "strategy", "title"]).to_pylist()
        result["distinct_in_cycle_generations"] = _distinct_by_ad(
            [(r["ad_id"], r["title"]) for r in t if r["strategy"] == "query_free"])
    endpoint = ChatEndpoint.from_env(e.judge_url_env, e.judge_model_env, e.judge_api_key_env)
    if endpoint is not None:
        client = ChatClient(endpoint, cfg.creator.teacher.cache_dir / "judge",
                            cfg.creator.teacher.timeout_s, cfg.creator.teacher.retries,
                            cfg.creator.teacher.backoff_s, cfg.creator.teacher.concurrency)
        result["llm_judge"] = judge_gsb(cfg, client, rows[: e.judge_max_pairs],
                                        titles[: e.judge_max_pairs])
    else:
        result["llm_judge"] = None  # no judge endpoint configured
    return result


def judge_gsb(cfg: Config, client, rows: list[dict], titles: list[str]) -> dict[str, Any]:
    """Pairwise judge, both orders; only consistent verdicts count (HLLM-Creator §4.1.5)."""

    template = load_prompt(cfg, "judge")

    def prompt(r: dict, a: str, b: str) -> str:
        return render_prompt(template, {
            "query": json.dumps(r["query"]) if r["query"] else "(none)",
            "selling_points": json.dumps(r["selling_points"], ensure_ascii=False),
            "history": "(see profile)", "profile": r["profile"],
            "title_a": json.dumps(a, ensure_ascii=False),
            "title_b": json.dumps(b, ensure_ascii=False)})

    fields = {"answer": str}
    first = client.ask_many([prompt(r, t, r["original_title"]) for r, t in
                             zip(rows, titles, strict=True)], fields)
    second = client.ask_many([prompt(r, r["original_title"], t) for r, t in
                              zip(rows, titles, strict=True)], fields)
    good = bad = same = failed = 0
    for x, y in zip(first, second, strict=True):
        if isinstance(x, Failure) or isinstance(y, Failure):
            failed += 1
            same += 1
            continue
        a, b = x["answer"].strip().lower(), y["answer"].strip().lower()
        if a == "a" and b == "b":
            good += 1
        elif a == "b" and b == "a":
            bad += 1
        else:
            same += 1
    n = good + same + bad
    return {"good": good, "same": same, "bad": bad, "failed": failed,
            "advantage": round((good - bad) / max(n, 1), 4)}


def train_and_evaluate(cfg: Config, cycle_id: str, progress: bool = True,
                       **train_args: Any) -> Path:
    """Train a new Creative LLM version on a cycle and record its held-out metrics in
    `creator.json`."""
    path = train_creator.train(cfg, cycle_id, progress=progress, **train_args)
    meta = read_meta(path, CREATOR)
    meta["metrics"] = evaluate_artifact(cfg, path, cycle_id, progress=progress)
    write_meta(path, CREATOR, meta)
    log.info("Creative LLM %s: %s", path.name, meta["metrics"])
    return path
