import json
from collections import Counter

import pyarrow.parquet as pq
import pytest

from jobs.platform.errors import UserError
from jobs.sample import sample_data
from jobs.sample.catalog_vocab import CATEGORIES
from jobs.sample.sample_data import SampleSpec, generate


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    out = tmp_path_factory.mktemp("s") / "data"
    generate(SampleSpec(users=400, ads=200, seed=3, events_per_user=40), out, progress=False)
    ads = pq.read_table(out / "ads").to_pylist()
    clicks = pq.read_table(out / "clicks").to_pylist()
    return out, ads, clicks


def test_catalog_is_realistic(sample):
    _, ads, _ = sample
    assert len(CATEGORIES) >= 12
    assert len({a["category"] for a in ads}) >= 12
    for a in ads:
        assert 4 <= len(a["selling_points"]) <= 8
        assert a["title"].startswith(a["brand"])
        assert len(set(a["selling_points"])) == len(a["selling_points"])
    assert len({a["ad_id"] for a in ads}) == len(ads)
    statuses = Counter(a["status"] for a in ads)
    assert statuses["paused"] > 0 and statuses["active"] > statuses["paused"]
    # one brand per advertiser: a brand names exactly one advertiser
    owners = {}
    for a in ads:
        owners.setdefault(a["brand"], set()).add(a["advertiser_id"])
    assert all(len(v) == 1 for v in owners.values())


def test_clicks_have_queries_repeats_and_paused_ads(sample):
    _, ads, clicks = sample
    paused = {a["ad_id"] for a in ads if a["status"] == "paused"}
    types = Counter(c["event_type"] for c in clicks)
    assert set(types) == {"impression", "click", "conversion"}
    with_query = [c for c in clicks if c["query"]]
    assert 0.05 < len(with_query) / len(clicks) < 0.6
    assert all(c["event_type"] != "impression" for c in with_query)
    assert any(c["ad_id"] in paused for c in clicks)
    repeats = sum(1 for a, b in zip(clicks, clicks[1:], strict=False)
                  if a["user_id"] == b["user_id"] and a["ad_id"] == b["ad_id"])
    assert repeats > 0.02 * len(clicks)
    assert max(c["event_time"] for c in clicks).isoformat() < "2026-11-01T00:00:00+00:00"


def test_personas_concentrate_and_drift(sample):
    """Users click a few categories (not uniform), and late clicks differ from early ones."""
    _, ads, clicks = sample
    cat = {a["ad_id"]: a["category"] for a in ads}
    by_user = {}
    for c in clicks:
        by_user.setdefault(c["user_id"], []).append(cat[c["ad_id"]])
    heavy = {u: cs for u, cs in by_user.items() if len(cs) >= 40}
    top3_share = [sum(n for _, n in Counter(cs).most_common(3)) / len(cs)
                  for cs in heavy.values()]
    uniform_top3 = 3 / len(CATEGORIES)
    assert sum(top3_share) / len(top3_share) > 2.5 * uniform_top3
    drifted = 0
    for cs in heavy.values():
        half = len(cs) // 2
        early, late = Counter(cs[:half]), Counter(cs[half:])
        new_in_late = sum(n for c, n in late.items() if early[c] == 0) / (len(cs) - half)
        drifted += new_in_late > 0.2
    assert drifted > 0.1 * len(heavy)


def test_deterministic_per_seed_and_chunked(tmp_path, monkeypatch):
    monkeypatch.setattr(sample_data, "USERS_PER_CHUNK", 25)  # several files, same content
    spec = SampleSpec(users=60, ads=30, seed=5)
    a = generate(spec, tmp_path / "a", progress=False)
    b = generate(spec, tmp_path / "b", progress=False)
    c = generate(SampleSpec(users=60, ads=30, seed=6), tmp_path / "c", progress=False)
    assert len(list((tmp_path / "a" / "clicks").glob("*.parquet"))) == 3
    ta, tb = pq.read_table(tmp_path / "a" / "clicks"), pq.read_table(tmp_path / "b" / "clicks")
    assert ta.equals(tb) and a["events"] == b["events"]
    assert not ta.equals(pq.read_table(tmp_path / "c" / "clicks"))
    users = ta.column("user_id").to_pylist()
    assert len(set(users)) == 60  # chunks do not reuse user ids
    assert c["events"] > 0


def test_rerun_with_same_spec_is_skipped_and_force_rewrites(tmp_path):
    spec = SampleSpec(users=10, ads=15, seed=1)
    generate(spec, tmp_path / "s", progress=False)
    marker = tmp_path / "s" / "clicks" / "part-00000.parquet"
    mtime = marker.stat().st_mtime_ns
    generate(spec, tmp_path / "s", progress=False)
    assert marker.stat().st_mtime_ns == mtime
    generate(spec, tmp_path / "s", force=True, progress=False)
    assert marker.stat().st_mtime_ns != mtime


def test_jsonl_format(tmp_path):
    generate(SampleSpec(users=5, ads=15, seed=1, format="jsonl"), tmp_path / "j", progress=False)
    line = (tmp_path / "j" / "clicks" / "part-00000.jsonl").read_text().splitlines()[0]
    row = json.loads(line)
    assert set(row) == {"user_id", "ad_id", "event_time", "event_type", "query"}
    assert row["event_time"].endswith("Z")
    with pytest.raises(UserError):
        generate(SampleSpec(users=5, ads=5, format="csv"), tmp_path / "x", progress=False)


def test_what_personas_value_and_do_shows_in_their_clicks(sample):
    """Within a category, users click the ads that speak to what they value; users with an
    activity click its products across categories. The hidden traits (`_personas`) are
    ground truth for checks only: the raw tables carry no trace of them."""
    import numpy as np

    from jobs.sample.catalog_vocab import ACTIVITIES
    from jobs.sample.sample_data import PERSONAS, VALUE_NAMES, value_hits

    out, ads, clicks = sample
    traits = {r["user_id"]: r for r in pq.read_table(out / PERSONAS).to_pylist()}
    assert {c["user_id"] for c in clicks} <= set(traits)  # every clicking user has traits
    assert {r["value"] for r in traits.values()} == set(VALUE_NAMES)
    score = {a["ad_id"]: sum(value_hits(t) for t in [a["title"], *a["selling_points"]])
             for a in ads}
    # mean value score of clicked ads, for the users who hold the value vs those who don't
    for k, value in enumerate(VALUE_NAMES):
        mine = [score[c["ad_id"]][k] for c in clicks if traits[c["user_id"]]["value"] == value]
        others = [score[c["ad_id"]][k] for c in clicks if traits[c["user_id"]]["value"] != value]
        assert np.mean(mine) > 1.3 * np.mean(others), value
    product = {a["ad_id"]: a["title"] for a in ads}
    hikers = [c for c in clicks if traits[c["user_id"]]["activity"] == "hiking"]
    rest = [c for c in clicks if traits[c["user_id"]]["activity"] != "hiking"]
    hiking = [p for _, p in ACTIVITIES["hiking"]["products"]]

    def share(cs):
        return np.mean([any(p in product[c["ad_id"]] for p in hiking) for c in cs])

    assert share(hikers) > 2 * share(rest)
    assert "value" not in pq.read_table(out / "clicks").column_names
