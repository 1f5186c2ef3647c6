"""Stage 7, kill_badcases: the Badcase Killer over the cycle's generations.

Reads `generate`'s `generations` and this cycle's `active_ads` (for the brand lexicon, built
each cycle: a brand of another advertiser in a title is a kill), judges every generated
title with the rules of `jobs/stages/badcase_rules.py` (lexicons and thresholds from `config/`),
and writes under `{lake}/cycles/{cycle_id}/kill_badcases/`:

    verdicts.parquet   every generation row + passed (bool) + reasons (list<string>, the
                       reason codes) + details (list<string>, "code: what matched")
    passing.parquet    the generation rows that passed (the library's input)
    _SUCCESS           counts, kills per reason and per rule family (for the cycle report)

Besides the per-title rules, two rules look across rows: `duplicate_variant` (the same
normalized title twice for one (ad, cluster) — e.g. its query-aware and query-free variants
—, or the same library key (ad, cluster, strategy, query) twice: the best-scored row is
kept; the same title for *different* clusters of an ad is not a bad case — each cluster's
users are served it — and is counted as `titles_shared_across_clusters`, a signal of weak
personalization for the report) and the id checks (`unsafe_id`: an ad or advertiser id
with '/', '..' or control characters never reaches an S3 key; `inactive_ad`).
Counts reconcile: verdicts = generations = passing + killed.

Titles are judged in chunks of whole ads (the rows of an ad share its source analysis) by
`badcase.workers` processes (default: one per core; one process for a small cycle); the
verdicts, rows and order are the same for any number, and `workers` is not part of the
stage's config hash. The cycle's catalog (active ads' product names and categories) adds
interest words an audience framing may use.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from jobs.platform.config import Config
from jobs.platform.errors import UserError
from jobs.platform.lake import StageOutput, fingerprint_code, read_manifest, run_stage, stage_dir
from jobs.stages import badcase_rules
from jobs.stages.badcase_rules import (
    FAMILY_OF,
    AdSource,
    BrandLexicon,
    catalog_words,
    judge_title,
    load_lexicons,
    stems,
    unsafe_id,
)

STAGE = "kill_badcases"
log = logging.getLogger(__name__)


def _inputs(cfg: Config, cycle_id: str) -> tuple[dict, dict]:
    gen = read_manifest(stage_dir(cfg.lake, cycle_id, "generate"))
    features = read_manifest(stage_dir(cfg.lake, cycle_id, "extract_features"))
    if gen is None or features is None:
        missing = [s for s, m in (("extract_features", features), ("generate", gen)) if m is None]
        raise UserError(f"{STAGE} for cycle {cycle_id} needs {' and '.join(missing)} first "
                        f"(no _SUCCESS under {stage_dir(cfg.lake, cycle_id, missing[0])})")
    if "generations" not in gen.get("outputs", {}):
        raise UserError(f"generate manifest of cycle {cycle_id} has no `generations` output")
    return gen, features


def lexicon_hash(cfg: Config) -> str:
    """Content hash of every lexicon and threshold file: editing one re-runs the stage."""
    h = hashlib.sha256()
    bc = cfg.badcase
    for p in (bc.marketing_phrases, bc.audience_phrases, bc.stopwords, bc.sensitive_terms,
              bc.profanity, bc.location_ignore, bc.thresholds, bc.interest_words):
        h.update(Path(p).name.encode() + b"\0" + Path(p).read_bytes())
    # the activity lexicon interest_words.yaml names (misfit_audience reads it)
    import yaml

    acts = (yaml.safe_load(Path(bc.interest_words).read_text(encoding="utf-8")) or {}).get(
        "activities")
    if acts and (Path(bc.interest_words).parent / str(acts)).is_file():
        p = Path(bc.interest_words).parent / str(acts)
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:16]


def config_hash(cfg: Config) -> str:
    """Hash of the `badcase` section without `workers` (the verdicts do not depend on it)."""
    import json

    blob = json.dumps(cfg.badcase.model_dump(mode="json", exclude={"workers"}),
                      sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _fingerprint(cfg: Config, gen: dict, features: dict) -> dict[str, Any]:
    return {"generations": gen["outputs"]["generations"],
            "generate_finished": gen["finished_at"],
            "features_finished": features["finished_at"],
            "lexicons": lexicon_hash(cfg),
            "code": fingerprint_code(Path(__file__), Path(badcase_rules.__file__))}


def title_key(title: str | None) -> tuple[str, ...]:
    """Normalized title for duplicate detection (case, punctuation, inflection ignored)."""
    return tuple(v for _, v in stems(title or ""))


def shared_titles(passing: pa.Table, keys: list[tuple] | None = None) -> int:
    """Passing variants whose title another cluster of the same ad also got (`keys`: the
    rows' `title_key`s when already known)."""
    if keys is None:
        keys = [title_key(t) for t in passing.column("title").to_pylist()]
    seen: Counter = Counter(zip(passing.column("ad_id").to_pylist(), keys, strict=True))
    return sum(c for c in seen.values() if c > 1)


# Titles per task of the process pool: small enough to balance the workers and show
# progress, large enough that an ad's rows (which share its source analysis) stay together.
CHUNK_ROWS = 2000
# Fewer titles than this per worker are judged faster than a worker process starts (~2 s:
# imports and lexicons), so a small cycle is judged in this process.
MIN_ROWS_PER_WORKER = 10_000


def default_workers(cfg: Config) -> int:
    """`badcase.workers`, else the CPU cores this process may use."""
    if cfg.badcase.workers:
        return int(cfg.badcase.workers)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


# The judging context of a worker process (set once by `_init_worker`), or of the parent
# when it judges in-process.
_CONTEXT: dict[str, Any] = {}


def _init_worker(badcase: dict, brand_owners: dict[str, set[str]],
                 catalog: frozenset[str] | None) -> None:
    from jobs.platform.config import Badcase

    _CONTEXT.update(lex=load_lexicons(Badcase.model_validate(badcase)),
                    brands=BrandLexicon(brand_owners), catalog=catalog)


def _judge_chunk(chunk: list[tuple[tuple, list[tuple[str | None, str | None]]]]
                 ) -> list[tuple[list[tuple[str, str]], tuple[str, ...] | None]]:
    """(findings, title key when no finding) per title of `chunk`: a list of (ad source,
    [(title, advertiser id), ...]) groups, in order."""
    lex, brands, catalog = _CONTEXT["lex"], _CONTEXT["brands"], _CONTEXT["catalog"]
    out = []
    for (original, points, query, brand, category), titles in chunk:
        src = AdSource(original, list(points), query or None, brand or None, category or None)
        for title, adv in titles:
            found = judge_title(title, src, lex, brands, adv, catalog)
            out.append((found, None if found else title_key(title)))
    return out


def judge_rows(rows: pa.Table, cfg: Config, active_ads: pa.Table, progress: bool = True,
               workers: int | None = None, chunk_rows: int | None = None,
               min_rows_per_worker: int | None = None,
               ) -> tuple[list[list[str]], list[list[str]]]:
    """Reason codes and details per generation row (same order as `rows`), for any number
    of `workers` (default: `badcase.workers`, else the cores; one for fewer than
    `min_rows_per_worker` rows per worker)."""
    reasons, details, _ = _judge_all(rows, cfg, active_ads, progress, workers, chunk_rows,
                                     min_rows_per_worker)
    return reasons, details


def _judge_all(rows: pa.Table, cfg: Config, active_ads: pa.Table, progress: bool,
               workers: int | None, chunk_rows: int | None = None,
               min_rows_per_worker: int | None = None,
               ) -> tuple[list[list[str]], list[list[str]], list[tuple | None]]:
    """Reasons, details and the normalized title of each row (None when a per-title rule
    killed it). Titles are judged in chunks of whole ads, by `workers` processes (default
    `default_workers`); the verdicts do not depend on how many."""
    from tqdm import tqdm

    chunk_rows = max(1, chunk_rows or CHUNK_ROWS)
    min_rows_per_worker = max(1, min_rows_per_worker or MIN_ROWS_PER_WORKER)
    lex = load_lexicons(cfg.badcase)
    brand_owners: dict[str, set[str]] = {}
    for b, a in zip(active_ads.column("brand").to_pylist(),
                    active_ads.column("advertiser_id").to_pylist(), strict=True):
        if b and a:
            brand_owners.setdefault(b, set()).add(a)
    active = set(active_ads.column("ad_id").to_pylist())
    # the catalog's category of each ad: an activity framing must fit it (misfit_audience)
    category_of: dict[str, str] = {}
    if "category" in active_ads.column_names:
        category_of = {a: c for a, c in zip(active_ads.column("ad_id").to_pylist(),
                                             active_ads.column("category").to_pylist(),
                                             strict=True) if a and c}
    catalog = None  # interest words of the cycle's catalog, for audience framings
    if {"title", "category", "brand"} <= set(active_ads.column_names):
        catalog = catalog_words(active_ads.column("title").to_pylist(),
                                active_ads.column("category").to_pylist(),
                                active_ads.column("brand").to_pylist(), lex)
    cols = {c: rows.column(c).to_pylist() for c in (
        "request_id", "ad_id", "advertiser_id", "cluster_id", "strategy", "query", "title",
        "original_title", "selling_points", "brand", "score", "cluster_rank")}
    n = rows.num_rows
    reasons: list[list[str]] = [[] for _ in range(n)]
    details: list[list[str]] = [[] for _ in range(n)]
    keys: list[tuple | None] = [None] * n

    def add(i: int, code: str, detail: str = "") -> None:
        if code not in reasons[i]:
            reasons[i].append(code)
        details[i].append(f"{code}: {detail}" if detail else code)

    # rows of one ad source together (they share its analysis), ads in order of appearance
    groups: dict[tuple, list[int]] = {}
    for i in range(n):
        ad, adv = cols["ad_id"][i], cols["advertiser_id"][i]
        if unsafe_id(ad) or unsafe_id(adv):
            continue  # judged below: its text is not trusted to be an ad at all
        key = (cols["original_title"][i] or "", tuple(cols["selling_points"][i] or ()),
               cols["query"][i] or "", cols["brand"][i] or "", category_of.get(ad, ""))
        groups.setdefault(key, []).append(i)
    chunks: list[tuple[list, list[int]]] = []  # (payload, row indices in payload order)
    payload: list = []
    order: list[int] = []
    for key, idx in groups.items():
        payload.append((key, [(cols["title"][i], cols["advertiser_id"][i]) for i in idx]))
        order.extend(idx)
        if len(order) >= chunk_rows:
            chunks.append((payload, order))
            payload, order = [], []
    if order:
        chunks.append((payload, order))
    del groups

    n_workers = max(1, min(workers or default_workers(cfg), len(chunks),
                           n // min_rows_per_worker))
    judged: dict[int, tuple[list[tuple[str, str]], tuple | None]] = {}
    bar = tqdm(total=sum(len(o) for _, o in chunks), desc="kill_badcases", unit="title",
               disable=not progress, mininterval=2)
    for (_, order), results in zip(chunks, _map_chunks(
            [p for p, _ in chunks], n_workers, cfg, brand_owners, catalog), strict=True):
        for i, r in zip(order, results, strict=True):
            judged[i] = r
        bar.update(len(order))
    bar.close()

    for i in range(n):
        ad, adv = cols["ad_id"][i], cols["advertiser_id"][i]
        if unsafe_id(ad) or unsafe_id(adv):
            add(i, "unsafe_id", "ad_id or advertiser_id is not a safe id")
            continue  # never judged further: its text is not trusted to be an ad at all
        if ad not in active:
            add(i, "inactive_ad", "not in this cycle's active_ads")
        q = cols["query"][i]
        if q and lex.user_id.search(q):
            add(i, "user_id_in_query", "user-id pattern")
        found, keys[i] = judged.pop(i)
        for code, detail in found:
            add(i, code, detail)

    # duplicate_variant: among the rows that passed so far, one per (ad, cluster, normalized
    # title) and one per library key; the best-scored row wins (then cluster rank, request id)
    def rank(i: int) -> tuple:
        score = cols["score"][i]
        return (-(score if score is not None else float("-inf")),
                cols["cluster_rank"][i] or 0, cols["request_id"][i] or "")

    order = sorted((i for i in range(n) if not reasons[i]), key=rank)
    seen_titles: dict[tuple, int] = {}
    seen_keys: dict[tuple, int] = {}
    for i in order:
        tkey = (cols["ad_id"][i], cols["cluster_id"][i], keys[i])
        lkey = (cols["ad_id"][i], cols["cluster_id"][i], cols["strategy"][i], cols["query"][i])
        if tkey in seen_titles:
            add(i, "duplicate_variant", f"same title as request {cols['request_id'][seen_titles[tkey]]}")
        elif lkey in seen_keys:
            add(i, "duplicate_variant",
                f"same (ad, cluster, strategy, query) as request {cols['request_id'][seen_keys[lkey]]}")
        else:
            seen_titles[tkey] = i
            seen_keys[lkey] = i
    return reasons, details, [None if reasons[i] else keys[i] for i in range(n)]


def _map_chunks(payloads: list, n_workers: int, cfg: Config,
                brand_owners: dict[str, set[str]], catalog: frozenset[str] | None):
    """`_judge_chunk` of each payload, in order: in this process, or over a pool of
    `n_workers` processes with at most two chunks per worker in flight. Workers are forked
    where the platform can (they inherit the loaded lexicons and never re-run the caller's
    main module; they only run the rules: no logging, no I/O, no threads), else spawned."""
    badcase = cfg.badcase.model_dump(mode="json")
    if n_workers <= 1:
        saved = dict(_CONTEXT)
        try:
            _init_worker(badcase, brand_owners, catalog)
            for p in payloads:
                yield _judge_chunk(p)
        finally:
            _CONTEXT.clear()
            _CONTEXT.update(saved)
        return
    import multiprocessing
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor

    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(n_workers, mp_context=multiprocessing.get_context(method),
                             initializer=_init_worker,
                             initargs=(badcase, brand_owners, catalog)) as pool:
        pending: deque = deque()
        todo = iter(payloads)
        for p in todo:
            pending.append(pool.submit(_judge_chunk, p))
            if len(pending) >= 2 * n_workers:
                break
        while pending:
            result = pending.popleft().result()
            nxt = next(todo, None)
            if nxt is not None:
                pending.append(pool.submit(_judge_chunk, nxt))
            yield result


def run(cfg: Config, cycle_id: str, force: bool = False, progress: bool = True) -> dict[str, Any]:
    """Judge the cycle's generations; commit verdicts and passing rows with kill counts."""
    gen, features = _inputs(cfg, cycle_id)
    inputs = _fingerprint(cfg, gen, features)
    return run_stage(cfg, cycle_id, STAGE, inputs=inputs, config_hash=config_hash(cfg),
                     build=lambda out: _judge_cycle(cfg, cycle_id, gen, features, inputs, out,
                                                    progress),
                     force=force)


def _judge_cycle(cfg: Config, cycle_id: str, gen: dict, features: dict, inputs: dict,
                 out: Path, progress: bool) -> StageOutput:
    timings: dict[str, float] = {}
    t0 = time.time()
    try:
        rows = pq.read_table(gen["outputs"]["generations"]["path"])
        active_ads = pq.read_table(features["outputs"]["active_ads"]["path"],
                                   columns=["ad_id", "advertiser_id", "brand", "title",
                                            "category"])
    except (OSError, pa.ArrowInvalid) as exc:
        raise UserError(f"{STAGE}: cannot read the cycle's generations or active_ads: "
                        f"{exc}") from None
    missing = {"request_id", "ad_id", "advertiser_id", "cluster_id", "strategy", "query",
               "title", "original_title", "selling_points", "brand", "score",
               "cluster_rank"} - set(rows.column_names)
    if missing:
        raise UserError(f"{STAGE}: generations of cycle {cycle_id} lack columns "
                        f"{sorted(missing)} (see the generate contract)")
    timings["read"] = round(time.time() - t0, 3)

    t0 = time.time()
    workers = max(1, min(default_workers(cfg), rows.num_rows // MIN_ROWS_PER_WORKER))
    reasons, details, keys = _judge_all(rows, cfg, active_ads, progress, workers)
    timings["judge"] = round(time.time() - t0, 3)

    passed = pa.array([not r for r in reasons], pa.bool_())
    verdicts = (rows.append_column("passed", passed)
                .append_column("reasons", pa.array(reasons, pa.list_(pa.string())))
                .append_column("details", pa.array(details, pa.list_(pa.string()))))
    passing = rows.filter(passed)
    pq.write_table(verdicts, out / "verdicts.parquet", compression="zstd")
    pq.write_table(passing, out / "passing.parquet", compression="zstd")

    by_reason = Counter(code for r in reasons for code in r)
    by_rule = Counter(fam for r in reasons for fam in {FAMILY_OF.get(c, "other") for c in r})
    n, n_pass = rows.num_rows, passing.num_rows
    counts = {"generations": n, "passed": n_pass, "killed": n - n_pass,
              "kill_rate": round((n - n_pass) / n, 4) if n else 0.0,
              "titles_shared_across_clusters": shared_titles(
                  passing, [k for k in keys if k is not None])}
    log.info("%s for cycle %s: %s passed of %s; kills %s", STAGE, cycle_id, n_pass, n,
             dict(by_reason))
    return StageOutput(
        {"verdicts": {"path": "verdicts.parquet", "rows": n},
         "passing": {"path": "passing.parquet", "rows": n_pass}},
        {"counts": counts,
         "kills_by_reason": dict(sorted(by_reason.items())),
         "kills_by_rule": dict(sorted(by_rule.items())),
         "brand_lexicon": {"brands": len({b for b in active_ads.column("brand").to_pylist()
                                          if b}),
                           "advertisers": len(set(active_ads.column("advertiser_id")
                                                  .to_pylist()))},
         "lexicon_hash": inputs["lexicons"],
         "workers": workers,
         "timings_s": timings})


def evaluate_labeled(cfg: Config, path: Path) -> dict[str, Any]:
    """The killer measured on a labeled JSONL set (`eval badcase`): per rule family
    precision, recall and the share killed; false kills (clean titles killed); every
    disagreement between label and verdict. Rows are judged as this stage judges a cycle
    (`judge_rows`). Reads the hand-labeled format (label clean/bad + families, see
    docs/badcase-labeling-guideline.md) and the older planted one (label = family + `also`).
    See `jobs.stages.badcase_eval`."""
    from jobs.stages.badcase_eval import evaluate

    return evaluate(cfg, Path(path), judge_rows)


def format_eval(result: dict[str, Any], split: str = "all", disagreements: bool = True) -> str:
    """The `eval badcase` report: summary, per-family table, every disagreement (of one
    split: `dev`, the held-out `test`, or `all`)."""
    from jobs.stages.badcase_eval import format_report

    return format_report(result, split, disagreements)
