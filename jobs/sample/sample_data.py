"""Synthetic raw `ads` and `clicks` tables, deterministic per seed, streamed to disk.

Users are personas, as real shoppers are: each does something (hiking, commuting, home
office, cooking, ...: `catalog_vocab.ACTIVITIES`, whose products span categories; some do
a second thing) and values one thing in what they buy (price, durability, portability,
performance, natural ingredients: `catalog_vocab.VALUES`). What they do shows in which
products they click (with a favourite among them), what they value in which ads (among
similar ads, the one whose attributes and selling points speak to it). Most users also
pick up a short-term interest part-way through their history that drifts their clicks,
and a tenth of clicks are noise.

Ads have realistic titles (brand, attributes, product) and 4-8 selling points, and lean
on one value (its attributes and points come first). Search queries name the product and
often one of the ad's selling points ("hiking boots lifetime warranty"). Clicks carry
queries on part of the events, paused ads get historic clicks, and users click the same
ad again.

Users are generated in chunks with numpy and written one Parquet (or JSONL) file per
chunk, so memory stays bounded at any scale (1M users / 50M events included).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from jobs.platform.errors import UserError
from jobs.sample.catalog_vocab import (
    ACTIVITIES,
    CATEGORIES,
    QUERY_PREFIXES,
    QUERY_SUFFIXES,
    VALUES,
)

GENERIC_SELLING_POINTS = [
    "30-day free returns",
    "Ships within 24 hours",
    "Rated 4.7 out of 5 by customers",
    "Secure checkout",
    "Price match guarantee",
]
BRAND_SUFFIXES = ["", "Labs", "Studio", "Supply", "Collective", "Works", "House", "Goods",
                  "Company", "Outfitters", "Select", "Originals", "Essentials", "Craft"]
HISTORY_DAYS = 90
QUERIES_PER_AD = 3
VALUE_NAMES = list(VALUES)
VALUE_CANDIDATES = 8  # similar ads a persona chooses among by what it values
VALUE_LOYALTY = 0.9  # share of clicks where it does
USERS_PER_CHUNK = 20_000
MANIFEST = "_SAMPLE.json"
PERSONAS = "_personas"  # hidden traits per user (value, activity): ground truth for checks

ADS_SCHEMA = pa.schema([
    ("ad_id", pa.string()), ("advertiser_id", pa.string()), ("campaign_id", pa.string()),
    ("title", pa.string()), ("selling_points", pa.list_(pa.string())), ("brand", pa.string()),
    ("category", pa.string()), ("status", pa.string()),
    ("updated_at", pa.timestamp("ms", tz="UTC")),
])
CLICKS_SCHEMA = pa.schema([
    ("user_id", pa.string()), ("ad_id", pa.string()),
    ("event_time", pa.timestamp("ms", tz="UTC")), ("event_type", pa.string()),
    ("query", pa.string()),
])


@dataclass(frozen=True)
class SampleSpec:
    users: int
    ads: int
    seed: int = 7
    events_per_user: float = 40.0
    end: str = "2026-11-01T00:00:00Z"
    format: str = "parquet"

    def end_time(self) -> datetime:
        try:
            return datetime.fromisoformat(self.end.replace("Z", "+00:00")).astimezone(UTC)
        except ValueError:
            raise UserError(f"sample end {self.end!r} is not an ISO 8601 instant") from None


@dataclass
class Catalog:
    """The ad table in columns, plus the lookups the click generator needs."""

    table: pa.Table
    category: np.ndarray  # (n_ads,) category index
    product: np.ndarray  # (n_ads,) product index within the category
    queries: pa.Array  # (n_ads * QUERIES_PER_AD,) candidate search queries, per ad
    value_score: np.ndarray  # (n_ads, n_values) attributes + points that speak to each value


def value_hits(text: str) -> np.ndarray:
    """(n_values,) 1 where the text speaks to the value (a cue of `VALUES` in it)."""
    low = text.lower()
    return np.array([any(c in low for c in VALUES[v]) for v in VALUE_NAMES], dtype=float)


def _query_keyword(point: str) -> str:
    """What a shopper would type of a selling point: "Lifetime warranty" -> "lifetime
    warranty", "Up to 30 hours of playback" -> "30 hours of playback"."""
    low = point.lower().replace(",", "")
    for lead in ("up to ", "includes ", "only "):
        low = low.removeprefix(lead)
    return " ".join(low.split()[:4])


def _brand_names(base: list[str], count: int) -> list[str]:
    names = []
    for k in range(count):
        suffix = BRAND_SUFFIXES[(k // len(base)) % len(BRAND_SUFFIXES)]
        rnd = k // (len(base) * len(BRAND_SUFFIXES))
        name = base[k % len(base)] + (f" {suffix}" if suffix else "")
        names.append(name + (f" {rnd + 1}" if rnd else ""))
    return names


def make_catalog(spec: SampleSpec) -> Catalog:
    rng = np.random.default_rng([spec.seed, 0])
    cats = list(CATEGORIES)
    n_adv = max(len(cats), spec.ads // 20)
    adv_cat = np.arange(n_adv) % len(cats)  # every category has advertisers
    per_cat_rank = np.zeros(n_adv, dtype=int)
    seen: dict[int, int] = {}
    for a, c in enumerate(adv_cat):
        per_cat_rank[a] = seen.get(c, 0)
        seen[c] = per_cat_rank[a] + 1
    brands_by_cat = {c: _brand_names(CATEGORIES[cats[c]]["brands"], seen[c]) for c in seen}
    adv_brand = [brands_by_cat[c][per_cat_rank[a]] for a, c in enumerate(adv_cat)]
    adv_campaigns = rng.integers(1, 6, size=n_adv)

    # Advertisers own ads with a skew: a few large advertisers, many small ones.
    ad_adv = np.minimum((rng.random(spec.ads) ** 1.5 * n_adv).astype(int), n_adv - 1)
    ad_adv[: min(n_adv, spec.ads)] = np.arange(min(n_adv, spec.ads))
    end = spec.end_time()
    rows: dict[str, list] = {k: [] for k in ADS_SCHEMA.names}
    ad_cat = np.empty(spec.ads, dtype=int)
    ad_prod = np.empty(spec.ads, dtype=int)
    queries: list[str] = []
    value_score = np.zeros((spec.ads, len(VALUE_NAMES)))
    for i in range(spec.ads):
        a = int(ad_adv[i])
        c = int(adv_cat[a])
        vocab = CATEGORIES[cats[c]]
        p = int(rng.integers(len(vocab["products"])))
        product = vocab["products"][p]
        lean = int(rng.integers(len(VALUE_NAMES)))  # the value this ad leans on
        # no attribute the product name already says ("Cordless Lawn Mower, Cordless")
        attrs = _leaning(rng, [t for t in vocab["attributes"]
                               if t.lower() not in product.lower()], lean, 2, 1)
        points_pool = list(dict.fromkeys(vocab["selling_points"] + GENERIC_SELLING_POINTS))
        n_points = int(rng.integers(4, 9))
        points = _leaning(rng, points_pool, lean, min(n_points, len(points_pool)), 2)
        title = f"{adv_brand[a]} {attrs[0]} {product}"
        if rng.random() < 0.6:
            title += f", {attrs[1]}"
        if rng.random() < 0.4:
            title += f" - {points[0]}"
        rows["ad_id"].append(f"ad-{i:07d}")
        rows["advertiser_id"].append(f"adv-{a:05d}")
        rows["campaign_id"].append(f"cmp-{a:05d}-{int(rng.integers(adv_campaigns[a])):02d}")
        rows["title"].append(title)
        rows["selling_points"].append(points)
        rows["brand"].append(adv_brand[a])
        rows["category"].append(cats[c])
        rows["status"].append("paused" if rng.random() < 0.1 else "active")
        rows["updated_at"].append(end - timedelta(seconds=float(rng.random() * 60 * 86400)))
        ad_cat[i], ad_prod[i] = c, p
        value_score[i] = sum(value_hits(t) for t in [*attrs, *points])
        base = product.lower()
        # most searches name a selling point of the ad besides the product
        asked = rng.permutation(len(points))
        for k in range(QUERIES_PER_AD):
            if rng.random() < 0.8:
                words = [rng.choice(QUERY_PREFIXES), base,
                         _query_keyword(points[asked[k % len(points)]])]
            else:
                words = [rng.choice(QUERY_PREFIXES), attrs[0].lower(), base,
                         rng.choice(QUERY_SUFFIXES)]
            queries.append(" ".join(w for w in words if w))
    table = pa.Table.from_pydict(rows, schema=ADS_SCHEMA)
    return Catalog(table, ad_cat, ad_prod, pa.array(queries, pa.string()), value_score)


def _leaning(rng, pool: list[str], lean: int, size: int, first: int) -> list[str]:
    """`size` texts of `pool`: up to `first` that speak to value `lean` first, the rest at
    random (an ad leans on one value but mentions others)."""
    fits = [t for t in pool if value_hits(t)[lean]]
    head = list(rng.choice(fits, size=min(first, len(fits)), replace=False)) if fits else []
    rest = [t for t in pool if t not in head]
    tail = list(rng.choice(rest, size=min(size - len(head), len(rest)), replace=False))
    order = head + tail
    return [str(t) for t in order]


class _AdPicker:
    """Draws ads by (category, product) with a popularity skew, vectorized."""

    def __init__(self, cat: np.ndarray, prod: np.ndarray, n_cats: int, n_prods: int):
        self.order = np.lexsort((prod, cat))  # ads sorted by category, then product
        key_sorted = cat[self.order] * n_prods + prod[self.order]
        keys = np.arange(n_cats * n_prods)
        self.group_start = np.searchsorted(key_sorted, keys, side="left")
        self.group_len = np.searchsorted(key_sorted, keys, side="right") - self.group_start
        cat_sorted = cat[self.order]
        self.cat_start = np.searchsorted(cat_sorted, np.arange(n_cats), side="left")
        self.cat_len = np.searchsorted(cat_sorted, np.arange(n_cats), side="right") - self.cat_start
        self.n_prods = n_prods
        self.n_ads = len(cat)

    def pick(self, rng, cat, prod, use_product) -> np.ndarray:
        skew = rng.random(len(cat)) ** 1.7  # low offsets are the popular ads of a group
        key = cat * self.n_prods + prod
        start = np.where(use_product, self.group_start[key], self.cat_start[cat])
        length = np.where(use_product, self.group_len[key], self.cat_len[cat])
        empty_group = length == 0  # no ad for that product: fall back to the category
        start = np.where(empty_group, self.cat_start[cat], start)
        length = np.where(empty_group, self.cat_len[cat], length)
        pos = start + np.minimum((skew * length).astype(int), np.maximum(length - 1, 0))
        picked = self.order[np.minimum(pos, self.n_ads - 1)]
        no_ads = length == 0  # a category without ads (tiny catalogs): any ad at all
        picked[no_ads] = rng.integers(self.n_ads, size=int(no_ads.sum()))
        return picked


def make_click_chunk(spec: SampleSpec, catalog: Catalog, picker: _AdPicker,
                     first_user: int, n_users: int, chunk_index: int,
                     traits: list | None = None) -> pa.Table:
    """One chunk of users' events. `traits`, when given, receives the chunk's hidden
    persona table (user_id, value, activity): the ground truth a check of the clusters
    and titles can use; the pipeline never reads it."""
    rng = np.random.default_rng([spec.seed, 1, chunk_index])
    n_cats = len(CATEGORIES)
    act_cat, act_prod, act_len = _activity_table()
    n_act = len(ACTIVITIES)
    act_pop = np.linspace(1.5, 0.7, n_act)
    act_pop /= act_pop.sum()

    # Personas: a main activity (its products span categories), for some a second one,
    # a favourite product of the main one, and what they value.
    main = rng.choice(n_act, size=n_users, p=act_pop)
    second = np.where(rng.random(n_users) < 0.4, rng.choice(n_act, size=n_users, p=act_pop), main)
    favourite = (rng.random(n_users) * act_len[main]).astype(int)
    value = rng.integers(len(VALUE_NAMES), size=n_users)
    # Short-term interest that appears part-way through the history (drift).
    drifts = rng.random(n_users) < 0.6
    drift_at = rng.uniform(0.4, 0.85, size=n_users)
    new_act = rng.choice(n_act, size=n_users, p=act_pop)

    # Events per user: heavy-tailed with the configured mean.
    mean = max(spec.events_per_user - 1, 0.01)
    n_ev = 1 + rng.negative_binomial(1.5, 1.5 / (1.5 + mean), size=n_users)
    user = np.repeat(np.arange(n_users), n_ev)
    n = len(user)
    t = rng.random(n)
    order = np.lexsort((t, user))  # oldest first within each user
    t = t[order]

    r = rng.random(n)
    act = np.where(r < 0.8, main[user], second[user])
    in_drift = drifts[user] & (t > drift_at[user]) & (rng.random(n) < 0.55)
    act = np.where(in_drift, new_act[user], act)
    pick = (rng.random(n) * act_len[act]).astype(int)
    pick = np.where((act == main[user]) & (rng.random(n) < 0.3), favourite[user], pick)
    cat, prod = act_cat[act, pick], act_prod[act, pick]
    noise = rng.random(n) < 0.1
    cat = np.where(noise, rng.integers(n_cats, size=n), cat)
    use_product = ~noise
    # Values: among a few similar ads, the one that speaks to what the persona values;
    # half the candidates are the product's ads, half the category's (a shopper who cares
    # about durability will take another durable product over the favourite's cheap one)
    half = VALUE_CANDIDATES // 2
    cands = np.stack([picker.pick(rng, cat, prod, use_product) for _ in range(half)]
                     + [picker.pick(rng, cat, prod, np.zeros(n, bool))
                        for _ in range(VALUE_CANDIDATES - half)], 1)  # (n, K)
    fit = (catalog.value_score[cands, value[user][:, None]] + rng.random(cands.shape) * 0.5
           + 0.6 * (np.arange(VALUE_CANDIDATES) < half)[None, :])
    chosen = cands[np.arange(n), fit.argmax(1)]
    ad = np.where(rng.random(n) < VALUE_LOYALTY, chosen, cands[:, 0])
    repeat = (rng.random(n) < 0.12) & (np.r_[-1, user[:-1]] == user)
    ad = np.where(repeat, np.r_[0, ad[:-1]], ad)

    kind = rng.choice(3, size=n, p=[0.40, 0.55, 0.05])  # impression / click / conversion
    end_ms = int(spec.end_time().timestamp() * 1000)
    span_ms = HISTORY_DAYS * 86400 * 1000
    event_ms = end_ms - ((1.0 - t) * span_ms).astype(np.int64) - 1
    has_query = (kind > 0) & (rng.random(n) < 0.35)
    q_index = ad * QUERIES_PER_AD + rng.integers(QUERIES_PER_AD, size=n)
    query = catalog.queries.take(pa.array(q_index))
    query = pa.compute.if_else(pa.array(has_query), query, pa.nulls(n, pa.string()))

    user_ids = pa.array([f"u{first_user + i:08d}" for i in range(n_users)], pa.string())
    if traits is not None:
        names = list(ACTIVITIES)
        traits.append(pa.table({
            "user_id": user_ids,
            "value": pa.array([VALUE_NAMES[v] for v in value], pa.string()),
            "activity": pa.array([names[k] for k in main], pa.string()),
            "second_activity": pa.array([names[k] if k != m else None
                                         for k, m in zip(second, main, strict=True)],
                                        pa.string())}))
    return pa.Table.from_arrays(
        [
            user_ids.take(pa.array(user)),
            catalog.table.column("ad_id").combine_chunks().take(pa.array(ad)),
            pa.array(event_ms, pa.timestamp("ms", tz="UTC")),
            pa.array(np.array(["impression", "click", "conversion"])[kind], pa.string()),
            query,
        ],
        schema=CLICKS_SCHEMA,
    )


def _activity_table() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n_activities, max_products) category and product indices, and each row's length."""
    cats = list(CATEGORIES)
    width = max(len(a["products"]) for a in ACTIVITIES.values())
    act_cat = np.zeros((len(ACTIVITIES), width), dtype=int)
    act_prod = np.zeros((len(ACTIVITIES), width), dtype=int)
    act_len = np.zeros(len(ACTIVITIES), dtype=int)
    for k, a in enumerate(ACTIVITIES.values()):
        for j, (c, p) in enumerate(a["products"]):
            act_cat[k, j] = cats.index(c)
            act_prod[k, j] = CATEGORIES[c]["products"].index(p)
        act_len[k] = len(a["products"])
    return act_cat, act_prod, act_len


def _write(table: pa.Table, path: Path, fmt: str) -> None:
    if fmt == "parquet":
        pq.write_table(table, path.with_suffix(".parquet"), compression="zstd")
        return
    with open(path.with_suffix(".jsonl"), "w", encoding="utf-8") as f:
        for row in table.to_pylist():
            for k, v in row.items():
                if isinstance(v, datetime):
                    row[k] = v.astimezone(UTC).isoformat(timespec="milliseconds").replace(
                        "+00:00", "Z")
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def generate(spec: SampleSpec, out: Path, force: bool = False, progress: bool = True) -> dict:
    """Write `{out}/ads/` and `{out}/clicks/`; skip when `out` already holds this spec."""
    out = Path(out)
    if spec.format not in ("parquet", "jsonl"):
        raise UserError(f"sample format must be parquet or jsonl, not {spec.format!r}")
    manifest_path = out / MANIFEST
    if manifest_path.is_file() and not force:
        existing = json.loads(manifest_path.read_text())
        if existing.get("spec") == asdict(spec):
            return existing
    staging = out.parent / f".{out.name}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "ads").mkdir(parents=True)
    (staging / "clicks").mkdir(parents=True)
    (staging / PERSONAS).mkdir(parents=True)

    catalog = make_catalog(spec)
    _write(catalog.table, staging / "ads" / "part-00000", spec.format)
    n_prods = max(len(v["products"]) for v in CATEGORIES.values())
    picker = _AdPicker(catalog.category, catalog.product, len(CATEGORIES), n_prods)
    n_events = 0
    chunks = range(0, spec.users, USERS_PER_CHUNK)
    for k, first in enumerate(tqdm(chunks, desc="sample clicks", unit="chunk",
                                   disable=not progress)):
        n_users = min(USERS_PER_CHUNK, spec.users - first)
        traits: list[pa.Table] = []
        table = make_click_chunk(spec, catalog, picker, first, n_users, k, traits)
        n_events += table.num_rows
        _write(table, staging / "clicks" / f"part-{k:05d}", spec.format)
        pq.write_table(traits[0], staging / PERSONAS / f"part-{k:05d}.parquet")
    manifest = {"spec": asdict(spec), "ads": spec.ads, "users": spec.users,
                "events": n_events, "categories": len(CATEGORIES)}
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
    if out.exists():
        shutil.rmtree(out)
    os.replace(staging, out)
    return manifest
