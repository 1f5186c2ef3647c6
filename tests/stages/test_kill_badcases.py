"""kill_badcases on the tiny sample's active_ads (extract_features through Spark), with a
`generate` output written to its contract: good and planted-bad titles."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from jobs.platform.errors import UserError
from jobs.platform.lake import read_manifest, stage_dir
from jobs.stages import kill_badcases
from tests.conftest import CYCLE
from tests.library_support import generation_row, generations_for, write_generations

pytestmark = pytest.mark.spark


@pytest.fixture
def cycle(tiny_cycle, tmp_path):
    """The tiny cycle's config, with its own copy of the lake's extract_features output."""
    import shutil

    from tests.conftest import make_config

    cfg, features = tiny_cycle
    own = make_config(tmp_path, cfg.inputs.ads, cfg.inputs.clicks)
    shutil.copytree(stage_dir(cfg.lake, CYCLE, "extract_features"),
                    stage_dir(own.lake, CYCLE, "extract_features"))
    active = pq.read_table(features["outputs"]["active_ads"]["path"])
    return own, active


def test_verdicts_reasons_and_counts(cycle):
    cfg, active = cycle
    ads = active.to_pylist()
    good = generations_for(active.slice(0, 10), clusters=3)
    a, b = ads[0], ads[1]
    other = next(x for x in ads if x["advertiser_id"] != a["advertiser_id"]
                 and x["brand"].split()[0] not in a["brand"])
    bad = [
        generation_row(a, 10, f"{a['title']} - now in Paris"),
        generation_row(a, 11, f"{other['brand']} {a['title'].split(',')[0]}"),
        generation_row(a, 12, f"{a['title'].split(',')[0]} cures insomnia"),
        generation_row(a, 13, a["title"]),
        generation_row(b, 14, f"{b['title'].split(',')[0]} for u00000042"),
        dict(generation_row(b, 15, f"{b['title']} for runners"), ad_id="../../evil"),
        generation_row(b, 16, ""),
        # duplicates: the same title twice for one cluster of an ad (query-aware and
        # query-free); the better score survives. Another cluster may get it too (23).
        generation_row(b, 20, f"{b['title'].split(',')[0]} for gift givers", score=0.9),
        generation_row(b, 20, f"{b['title'].split(',')[0]} for gift givers", score=0.2,
                       strategy="query_aware", query="gift"),
        generation_row(b, 23, f"{b['title'].split(',')[0]} for gift givers", score=0.5),
        dict(generation_row(b, 22, f"{b['title'].split(',')[0]} for hikers"), ad_id="ad-gone"),
    ]
    write_generations(cfg, CYCLE, good + bad)
    m = kill_badcases.run(cfg, CYCLE, progress=False)
    rows = [r for r in pq.read_table(m["outputs"]["verdicts"]["path"]).to_pylist()
            if r["cluster_id"] >= 10]
    twice = [r for r in rows if r["cluster_id"] == 20]
    verdicts = {r["cluster_id"]: r for r in rows if r["cluster_id"] != 20}
    assert "location_not_in_source" in verdicts[10]["reasons"]
    assert "other_advertiser_brand" in verdicts[11]["reasons"]
    assert "medical_claim" in verdicts[12]["reasons"]
    assert "same_as_original" in verdicts[13]["reasons"]
    assert "user_id_in_title" in verdicts[14]["reasons"]
    assert verdicts[15]["reasons"] == ["unsafe_id"]
    assert verdicts[16]["reasons"] == ["empty_title"]
    assert [(r["strategy"], r["passed"], r["reasons"]) for r in twice] == [
        ("query_free", True, []), ("query_aware", False, ["duplicate_variant"])]
    assert verdicts[23]["passed"]
    assert "inactive_ad" in verdicts[22]["reasons"]
    assert all(not v["passed"] for k, v in verdicts.items() if k != 23)
    assert all(any(d.startswith(r) for d in v["details"]) for v in verdicts.values()
               for r in v["reasons"])
    assert not any("u00000042" in d for v in verdicts.values() for d in v["details"])

    c = m["counts"]  # counts reconcile: every generation is in verdicts; passing + killed
    assert m["outputs"]["verdicts"]["rows"] == c["generations"] == len(good) + len(bad)
    assert c["passed"] + c["killed"] == c["generations"]
    assert m["outputs"]["passing"]["rows"] == c["passed"] == len(good) + 2
    assert c["titles_shared_across_clusters"] == 2
    assert m["kills_by_reason"]["duplicate_variant"] == 1
    assert m["kills_by_rule"]["safety"] == 3  # unsafe id, user id in title, inactive ad
    passing = pq.read_table(m["outputs"]["passing"]["path"])
    assert "passed" not in passing.column_names and passing.num_rows == c["passed"]
    assert m["brand_lexicon"]["brands"] > 1


def test_rerun_is_skipped_and_lexicon_change_reruns(cycle, tmp_path):
    cfg, active = cycle
    write_generations(cfg, CYCLE, generations_for(active.slice(0, 5)))
    first = kill_badcases.run(cfg, CYCLE, progress=False)
    assert kill_badcases.run(cfg, CYCLE, progress=False)["skipped"] is True
    custom = tmp_path / "marketing.txt"
    custom.write_text(cfg.badcase.marketing_phrases.read_text() + "\nbrand new\n")
    cfg.badcase.marketing_phrases = custom
    again = kill_badcases.run(cfg, CYCLE, progress=False)
    assert again["skipped"] is False and again["lexicon_hash"] != first["lexicon_hash"]


def test_missing_generate_is_a_clear_error(cycle):
    cfg, _ = cycle
    with pytest.raises(UserError, match="needs generate first"):
        kill_badcases.run(cfg, CYCLE, progress=False)
    assert read_manifest(stage_dir(cfg.lake, CYCLE, "kill_badcases")) is None
