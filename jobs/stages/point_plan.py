"""The point plan: which of an ad's claims a title for this audience carries.

An audience (a user in training, a user cluster in a cycle) is described by its **word
lift**: how much more often its clicks land on items whose text carries a word than its
baseline's clicks do (log of the smoothed rate ratio). A user's baseline is the catalog; a
cluster's is its `match.plan_neighbours` nearest clusters, so what is measured is what sets
the cluster apart from the clusters an ad is likely to be shown to beside it.

A claim (a selling point, or a clause of a long one) scores the mean lift of its content
words. The plan for a request is the ad's claims not already in its title, ranked: for a
query-aware request the claim with the most query words first (the query shapes the
title), then the audience's highest-lift claim. The teacher writes its training titles
from the same ranking (jobs/training/teachers.py) and the Creative LLM gets the plan in its
prompt; the grounded decoder and the Badcase Killer still judge every word against the
ad's own texts (the plan is made of them).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs.platform.config import Config

_WORD = re.compile(r"[A-Za-z][A-Za-z'&-]*")


def normalize(text: str) -> str:
    return " ".join(w.lower() for w in _WORD.findall(text or ""))


def content_words(text: str, stopwords: set[str] | frozenset[str]) -> set[str]:
    return {w for w in normalize(text).split() if w not in stopwords and len(w) > 1}


# words a clause cut from a longer point may not open with: it would read as the tail of a
# sentence ("or Polylactic Acid", "which makes it …"), not as a claim of its own
_CLAUSE_OPENERS_BAD = frozenset(
    "or and but nor so yet with without to of for from by in on at as than then also plus "
    "which that who whose where when while if because including includes such etc "
    "it its this these those they them their is are was were be".split())
# split a long point at `;` `(` `)`, at `,` that is not inside a number ("16,000"), at a
# spaced dash and at a sentence end
_CLAUSE_SPLIT = re.compile(r"[;()]|,(?!\d{3}\b)|\s[-–]\s|\.\s")


def _reads_as_claim(clause: str) -> bool:
    words = clause.split()
    if len(words) < 2 or len(clause) < 8:
        return False
    first = words[0].lower().strip("\"'")
    if first in _CLAUSE_OPENERS_BAD or not first[:1].isalnum():
        return False
    return any(len(w) >= 3 for w in _WORD.findall(clause))  # a content word, not digits only


def point_claims(point: str, max_chars: int) -> list[str]:
    """A selling point, or when it is too long to add, its clauses that are short enough
    and read as a claim of their own ("Relay/CAPACITOR hard start kit 500% incr starting
    torque, increased compressor…" -> "Relay/CAPACITOR hard start kit 500% incr starting
    torque"; never "or Polylactic Acid"): still the ad's own words."""
    point = " ".join((point or "").split()).strip(" .;,")
    if len(point) <= max_chars:
        return [point] if point else []
    parts = [c.strip(" .;,:") for c in _CLAUSE_SPLIT.split(point)]
    return [c for c in parts if len(c) <= max_chars and _reads_as_claim(c)]


def rank_claims(title: str, selling_points: list[str] | None, query: str | None,
                lift: Callable[[set[str]], float], stopwords: set[str] | frozenset[str],
                max_chars: int) -> list[tuple[int, str]]:
    """The ad's claims not already in its title, best first: (query words asked, claim).
    Ties keep the ad's own order."""
    have = content_words(title, stopwords)
    query_words = content_words(query or "", stopwords)
    scored = []
    for p in dict.fromkeys(selling_points or []):
        for claim in point_claims(p, max_chars):
            words = content_words(claim, stopwords)
            if not words or words <= have:
                continue
            scored.append((-len(words & query_words), -lift(words), len(scored), claim))
    scored.sort()
    return [(-asked, claim) for asked, _, _, claim in scored]


def choose_claims(ranked: list[tuple[int, str]], query: str | None, max_points: int,
                  budget: int) -> list[str]:
    """The plan: the query's claim (when one names a query word) and the audience's best
    claim, within `max_points` and `budget` characters (", "-joined)."""
    wanted = min(1 + bool(query and ranked and ranked[0][0] > 0), max_points)
    chosen: list[str] = []
    for _, claim in ranked:
        if len(chosen) >= wanted:
            break
        if len(", ".join([*chosen, claim])) + 2 <= budget:
            chosen.append(claim)
    return chosen


class ClusterWordLift:
    """Per cluster: click-weighted word counts over its users' clicked items, against its
    nearest clusters' (by centroid cosine). Built with sparse products, so a million users'
    clicks cost a few matrix multiplications."""

    def __init__(self, cluster_ids: list[int], words: list[str], counts: np.ndarray,
                 totals: np.ndarray, base: np.ndarray, base_totals: np.ndarray):
        self.row = {int(c): i for i, c in enumerate(cluster_ids)}
        self.col = {w: j for j, w in enumerate(words)}
        self.counts, self.totals = counts, totals  # (K, V), (K,)
        self.base, self.base_totals = base, base_totals

    @classmethod
    def from_clicks(cls, items: pa.Table, sequences: pa.Table, assignments: pa.Table,
                    centroids: Mapping[int, np.ndarray], neighbours: int,
                    stopwords: set[str] | frozenset[str]) -> ClusterWordLift:
        """items: item_hash, item_text; sequences: user_id, item_hashes (list); assignments:
        user_id, cluster_id; centroids: cluster id -> vector. Vectorized over clicks (Arrow
        and sparse products): a million users' histories never become Python objects."""
        from scipy import sparse

        ids = sorted(int(c) for c in centroids)
        texts = items.column("item_text").to_pylist()
        vocab: dict[str, int] = {}
        ir, ic = [], []
        for j, text in enumerate(texts):
            for w in content_words(text, stopwords):
                ir.append(j)
                ic.append(vocab.setdefault(w, len(vocab)))
        item_words = sparse.csr_matrix((np.ones(len(ir), np.float32), (ir, ic)),
                                       shape=(len(texts), max(len(vocab), 1)))
        # one row per click: its user's cluster row and its item row (unknowns dropped)
        hashes = sequences.column("item_hashes").combine_chunks()
        user_of_click = pc.take(sequences.column("user_id"), pc.list_parent_indices(hashes))
        cluster = pc.take(assignments.column("cluster_id"),
                          pc.index_in(user_of_click, value_set=assignments.column("user_id")))
        row = pc.index_in(pc.cast(cluster, pa.int64()), value_set=pa.array(ids, pa.int64()))
        col = pc.index_in(pc.list_flatten(hashes), value_set=items.column("item_hash"))
        ok = pc.and_(pc.is_valid(row), pc.is_valid(col))
        r = np.asarray(pc.filter(row, ok), dtype=np.int64)
        c = np.asarray(pc.filter(col, ok), dtype=np.int64)
        clicks = sparse.csr_matrix((np.ones(len(r), np.float32), (r, c)),
                                   shape=(len(ids), len(texts)))
        counts = np.asarray((clicks @ item_words).todense(), dtype=np.float32)  # (K, V)
        totals = np.asarray(clicks.sum(axis=1), dtype=np.float32).ravel()
        m = np.stack([np.asarray(centroids[c], np.float32) for c in ids])
        m /= np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)
        sim = m @ m.T
        np.fill_diagonal(sim, -np.inf)
        nb = min(neighbours, len(ids) - 1)
        if nb > 0:
            near = np.argsort(-sim, axis=1, kind="stable")[:, :nb]  # (K, nb)
            base = counts[near].sum(axis=1)
            base_totals = totals[near].sum(axis=1)
        else:  # a single cluster: against itself (every lift 0: the ad's own order)
            base, base_totals = counts.copy(), totals.copy()
        words = sorted(vocab, key=vocab.get)
        return cls(ids, words, counts, totals, base, base_totals)

    def lift(self, cluster_id: int, words: set[str]) -> float:
        i = self.row.get(int(cluster_id))
        if i is None or not words:
            return 0.0
        cols = [self.col.get(w) for w in words]
        c = np.array([self.counts[i, j] if j is not None else 0.0 for j in cols])
        b = np.array([self.base[i, j] if j is not None else 0.0 for j in cols])
        return float(np.mean(np.log((c + 1) / (self.totals[i] + 2))
                             - np.log((b + 1) / (self.base_totals[i] + 2))))


def cycle_planner(cfg: Config, features: dict, assignments: pa.Table,
                  centroids: Mapping[int, np.ndarray]
                  ) -> Callable[[str, list[str] | None, str | None, int], list[str]]:
    """(title, selling points, query, cluster id) -> that cluster's plan, from a cycle's
    `extract_features` manifest (who clicked what) and `assignments` (user_id, cluster_id):
    what match_ads gives a cluster and `eval creator` gives a grid centre. Claims fit the
    teacher's budget (`creator.teacher`)."""
    from jobs.stages.badcase_rules import read_lines

    stop_file = Path(cfg.badcase.stopwords)
    stopwords = {w.lower() for w in read_lines(stop_file)} if stop_file.is_file() else set()
    lift = ClusterWordLift.from_clicks(
        pq.read_table(features["outputs"]["items"]["path"], columns=["item_hash", "item_text"]),
        pq.read_table(features["outputs"]["user_sequences"]["path"],
                      columns=["user_id", "item_hashes"]),
        assignments, centroids, cfg.match.plan_neighbours, stopwords)
    t = cfg.creator.teacher

    def plan(title: str, selling_points: list[str] | None, query: str | None,
             cluster_id: int) -> list[str]:
        ranked = rank_claims(title, selling_points, query,
                             lambda words: lift.lift(cluster_id, words), stopwords,
                             t.max_added_chars - 2)
        return choose_claims(ranked, query, t.max_selling_points, t.max_added_chars)

    return plan

