"""Is it personalized? Instruments that compare each cluster's title with what that
cluster's users clicked, beside controls (DESIGN.md, "What personalized means").

- **distinct titles per ad** across its query-free clusters: the share of ads (with ≥ 3
  query-free variants) that got ≥ 3 distinct titles, and the mean distinct ratio;
- **cross-cluster fidelity**: for each ad and each pair of its clusters (a, b) with titles
  t_a, t_b, a win when sim(t_a, I_a) + sim(t_b, I_b) > sim(t_a, I_b) + sim(t_b, I_a), where
  I_c is what cluster c's users clicked; identical titles (or a tie) count half a win, so
  chance — and one title for every cluster — is 50%;
- **query uptake**: the share of query-aware titles that use a query word the ad's texts
  support and the same cluster's query-free title lacks;
- **plan kept**: the share of titles that carry their point plan's claims.

Titles and interests live in a TF-IDF space fitted on the cycle's item texts: a model
neither the generator (SmolLM2 + the HLLM's MiniLM user side) nor the teacher uses, so the
instrument cannot be fooled by a title that only pleases the generator's own embedding.
Imports nothing from the stages; the callers (eval creator, the report) pass plain rows.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.preprocessing import normalize

_WORD = re.compile(r"[a-z0-9][a-z0-9'&.-]*")


def _words(text: str | None) -> set[str]:
    return {w.strip(".-'") for w in _WORD.findall((text or "").lower())} - {""}


class InterestSpace:
    """TF-IDF over item texts; interest vectors are click-weighted means of item vectors."""

    def __init__(self, item_texts: Iterable[str]):
        texts = [t for t in item_texts if t and t.strip()]
        self.vectorizer = TfidfVectorizer(sublinear_tf=True, stop_words="english",
                                          token_pattern=r"(?u)\b[a-zA-Z][a-zA-Z]+\b")
        self.vectorizer.fit(texts or ["empty"])
        self.terms = self.vectorizer.get_feature_names_out()

    def embed(self, texts: list[str]) -> np.ndarray:
        """(n, V) dense, L2-normalized rows (a row of zeros for a text of no known word)."""
        return normalize(self.vectorizer.transform([t or "" for t in texts])).toarray()

    def interests(self, clicks: Iterable[tuple[Any, Any]], texts: Mapping[Any, str]
                  ) -> dict[Any, np.ndarray]:
        """Per group (a cluster): the normalized click-weighted mean of the vectors of the
        items its users clicked. `clicks`: (group, item key) per click; `texts`: item key ->
        item text. Sparse throughout, so a million users' clicks cost one matrix product."""
        from scipy import sparse

        counts: dict[tuple[Any, Any], int] = {}
        for group, item in clicks:
            if item in texts:
                counts[(group, item)] = counts.get((group, item), 0) + 1
        if not counts:
            return {}
        groups = sorted({g for g, _ in counts}, key=str)
        items = sorted({i for _, i in counts}, key=str)
        gi = {g: k for k, g in enumerate(groups)}
        ii = {i: k for k, i in enumerate(items)}
        (rows, cols), vals = zip(*((gi[g], ii[i]) for g, i in counts), strict=True), \
            list(counts.values())
        weights = sparse.csr_matrix((vals, (rows, cols)), shape=(len(groups), len(items)))
        item_vecs = normalize(self.vectorizer.transform([texts[i] for i in items]))
        mat = normalize(weights @ item_vecs).toarray()
        return {g: mat[k] for k, g in enumerate(groups)}

    def summary(self, vector: np.ndarray, k: int = 6, against: np.ndarray | None = None,
                exclude: set[str] | frozenset[str] = frozenset()) -> str:
        """The interest vector's top terms, as a one-line summary a person can read. With
        `against` (e.g. the mean of all clusters' interests), the terms that set this one
        apart; `exclude`: terms left out (brand names say little about an interest)."""
        score = vector - against if against is not None else vector
        out = []
        for i in np.argsort(-score):
            if len(out) == k or score[i] <= 0 or vector[i] <= 0:
                break
            if self.terms[i] not in exclude:
                out.append(self.terms[i])
        return ", ".join(out)


class CycleClicks:
    """A cycle's item texts and who clicked what (extract_features' `items` and
    `user_sequences`), with the interest space fitted on those texts."""

    def __init__(self, items: Path, sequences: Path):
        t = pq.read_table(items, columns=["item_hash", "item_text", "brand"]).to_pydict()
        self.texts = dict(zip(t["item_hash"], t["item_text"], strict=True))
        self.brand_words = frozenset(w for b in t["brand"] for w in _words(b))
        self.space = InterestSpace(self.texts.values())
        self._seq = pq.read_table(sequences, columns=["user_id", "item_hashes"]).to_pydict()

    def interests(self, group_of: Mapping[str, Any]) -> dict[Any, np.ndarray]:
        """Interest vectors of the groups of `group_of` (user id -> group: a cluster, or the
        user itself); users not in it are left out."""
        return self.space.interests(
            ((group_of[u], h) for u, hs in zip(self._seq["user_id"], self._seq["item_hashes"],
                                               strict=True) if u in group_of for h in hs),
            self.texts)


def distinct_titles(titles_by_ad: Mapping[Any, list[str]], min_variants: int = 3
                    ) -> dict[str, Any]:
    """Distinct titles among each ad's query-free variants."""
    groups = [[t.strip().lower() for t in ts] for ts in titles_by_ad.values()
              if len(ts) >= min_variants]
    if not groups:
        return {"ads": 0, "share_3plus_distinct": None, "one_title_for_all": None,
                "mean_distinct_ratio": None}
    return {"ads": len(groups),
            "share_3plus_distinct": round(float(np.mean([len(set(g)) >= 3 for g in groups])),
                                          4),
            "one_title_for_all": round(float(np.mean([len(set(g)) == 1 for g in groups])), 4),
            "mean_distinct_ratio": round(float(np.mean([len(set(g)) / len(g)
                                                        for g in groups])), 4)}


def cross_cluster_fidelity(titles: Mapping[Any, Mapping[Any, str]],
                           interests: Mapping[Any, np.ndarray], space: InterestSpace
                           ) -> dict[str, Any]:
    """titles: ad -> cluster -> title. Clusters without an interest vector are left out."""
    pairs, wins = 0, 0.0
    ads_won: list[float] = []
    cache: dict[str, np.ndarray] = {}
    all_titles = sorted({t for by_c in titles.values() for t in by_c.values()})
    if all_titles:
        for t, v in zip(all_titles, space.embed(all_titles), strict=True):
            cache[t] = v
    for by_cluster in titles.values():
        cs = [c for c in by_cluster if c in interests]
        ad_pairs, ad_wins = 0, 0.0
        for a, b in itertools.combinations(cs, 2):
            ta, tb = by_cluster[a], by_cluster[b]
            ia, ib = interests[a], interests[b]
            if ta.strip().lower() == tb.strip().lower():
                w = 0.5
            else:
                va, vb = cache[ta], cache[tb]
                own = float(va @ ia + vb @ ib)
                swapped = float(va @ ib + vb @ ia)
                w = 1.0 if own > swapped + 1e-9 else 0.5 if abs(own - swapped) <= 1e-9 else 0.0
            ad_pairs += 1
            ad_wins += w
        if ad_pairs:
            pairs += ad_pairs
            wins += ad_wins
            ads_won.append(ad_wins / ad_pairs)
    return {"pairs": pairs, "ads": len(ads_won),
            "fidelity": round(wins / pairs, 4) if pairs else None}


def plan_kept(titles_and_plans: Iterable[tuple[str, list[str] | None]]) -> dict[str, Any]:
    """The share of titles that say every word of every claim of their point plan (titles
    without a plan are left out): does the generator follow the plan it was given?"""
    kept = [all(_words(c) <= _words(t) for c in plan)
            for t, plan in titles_and_plans if plan]
    return {"variants": len(kept), "share": round(float(np.mean(kept)), 4) if kept else None}


def query_uptake(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """rows: {query, sources (the ad's texts, title first), query_aware, query_free} per
    (ad, cluster) that has both titles. A use: a query word that the ad's texts support, in the query-aware
    title and not in the query-free one."""
    n, used, open_n, open_used = 0, 0, 0, 0
    for r in rows:
        q = _words(r["query"]) & set().union(*(_words(s) for s in r["sources"]))
        if not q:
            continue  # the ad supports no word of the query: nothing to take up
        n += 1
        took = bool((q & _words(r["query_aware"])) - _words(r["query_free"]))
        used += took
        if q - _words(r["sources"][0]):  # the query asks for more than the title says
            open_n += 1
            open_used += took
    return {"pairs": n, "uptake": round(used / n, 4) if n else None,
            # among pairs whose query names a supported word the original title lacks (when
            # the title already holds every query word, no title can take one up)
            "open_pairs": open_n,
            "uptake_open": round(open_used / open_n, 4) if open_n else None}


def shuffled_interests(interests: Mapping[Any, np.ndarray], seed: int = 0
                       ) -> dict[Any, np.ndarray]:
    """The control for fidelity: each cluster judged against another cluster's interests
    (a derangement where there are ≥ 2 clusters). Fidelity against it should be ~50%."""
    keys = list(interests)
    if len(keys) < 2:
        return dict(interests)
    rng = np.random.default_rng(seed)
    while True:
        perm = rng.permutation(len(keys))
        if all(perm[i] != i for i in range(len(keys))):
            break
    return {k: interests[keys[perm[i]]] for i, k in enumerate(keys)}
