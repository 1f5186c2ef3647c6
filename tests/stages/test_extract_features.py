"""extract_features on real Spark: outputs, data tests on what it wrote, bad input, re-runs."""

from __future__ import annotations

import base64
import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from jobs.platform.errors import DataQualityError, UserError
from jobs.platform.lake import MANIFEST, read_manifest
from jobs.sample.sample_data import SampleSpec, make_catalog
from jobs.stages import extract_features
from tests.conftest import CYCLE, make_config, write_jsonl

pytestmark = pytest.mark.spark


def table(manifest, name):
    return pq.read_table(Path(manifest["path"]) / name).to_pylist()


@pytest.fixture(scope="module")
def happy(tmp_path_factory, tiny_sample):
    tmp = tmp_path_factory.mktemp("happy")
    cfg = make_config(tmp, tiny_sample / "ads", tiny_sample / "clicks",
                      "features.max_history=12", "features.top_queries=2")
    return cfg, extract_features.run(cfg, CYCLE)


def test_outputs_committed_with_manifest(happy):
    cfg, m = happy
    stage = Path(m["path"])
    assert stage == cfg.lake / "cycles" / CYCLE / "extract_features"
    assert (stage / MANIFEST).is_file()
    for name in ("user_sequences", "items", "active_ads", "ad_queries", "quarantine"):
        assert (stage / name).is_dir()
        assert m["outputs"][name]["rows"] == len(table(m, name))
    assert all(v["success"] for v in m["validation"].values())
    assert m["config"]["features"]["max_history"] == 12


def test_every_input_row_is_accounted_for(happy, tiny_sample):
    _, m = happy
    raw_ads = pq.read_table(tiny_sample / "ads").num_rows
    raw_clicks = pq.read_table(tiny_sample / "clicks").num_rows
    rec = m["reconciliation"]
    assert rec["ads"]["rows_in"] == raw_ads
    assert rec["clicks"]["rows_in"] == raw_clicks
    for c in rec.values():
        assert c["rows_in"] == c["accepted"] + c["quarantined"]
    assert rec["clicks"]["quarantined"] == 0  # the sample is clean


def test_user_sequences_are_recent_oldest_first_and_collapsed(happy, tiny_sample):
    _, m = happy
    clicks = [c for c in pq.read_table(tiny_sample / "clicks").to_pylist()
              if c["event_type"] == "click"]
    by_user: dict[str, list] = {}
    for c in sorted(clicks, key=lambda c: (c["event_time"], c["ad_id"])):
        by_user.setdefault(c["user_id"], []).append(c["ad_id"])
    seqs = {r["user_id"]: r for r in table(m, "user_sequences")}
    assert set(seqs) == set(by_user)
    for user, ads in by_user.items():
        collapsed = [a for i, a in enumerate(ads) if i == 0 or ads[i - 1] != a]
        row = seqs[user]
        assert row["ad_ids"] == collapsed[-12:]  # most recent 12, oldest first
        assert row["history_length"] == len(row["ad_ids"]) == len(row["item_hashes"])
        assert row["clicks_after_collapse"] == len(collapsed)
    assert any(len(v) > 12 for v in by_user.values())  # truncation was exercised


def test_items_active_ads_and_queries(happy, tiny_sample):
    _, m = happy
    ads = pq.read_table(tiny_sample / "ads").to_pylist()
    active = {a["ad_id"] for a in ads if a["status"] == "active"}
    out = table(m, "active_ads")
    assert {a["ad_id"] for a in out} == active
    items = {i["item_hash"]: i for i in table(m, "items")}
    assert all(a["item_hash"] in items for a in out)
    for a in out:
        # what the Item LLM reads: title, brand, category and the selling points
        assert items[a["item_hash"]]["item_text"] == " | ".join(
            [a["title"], a["brand"], a["category"], *a["selling_points"]])
    assert len({a["content_hash"] for a in out}) == len(out)

    clicks = pq.read_table(tiny_sample / "clicks").to_pylist()
    counts = Counter((c["ad_id"], c["query"].lower()) for c in clicks
                     if c["event_type"] == "click" and c["query"] and c["ad_id"] in active)
    queries = table(m, "ad_queries")
    assert queries
    for q in queries:
        assert q["clicks"] == counts[(q["ad_id"], q["query"])]
        assert 1 <= q["query_rank"] <= 2
        best = max(n for (ad, _), n in counts.items() if ad == q["ad_id"])
        if q["query_rank"] == 1:
            assert q["clicks"] == best


def test_rerun_is_skipped_and_force_replaces(happy):
    cfg, m = happy
    again = extract_features.run(cfg, CYCLE)
    assert again["skipped"] is True
    assert again["finished_at"] == m["finished_at"]
    before = {t: sorted(map(repr, table(m, t))) for t in ("user_sequences", "items", "ad_queries")}
    forced = extract_features.run(cfg, CYCLE, force=True)
    assert forced["skipped"] is False
    assert forced["finished_at"] != m["finished_at"]
    assert forced["outputs"] == m["outputs"]  # same inputs, same outputs, same place
    for t, rows in before.items():
        assert sorted(map(repr, table(forced, t))) == rows, t


# -- bad input ---------------------------------------------------------------------------------

GOOD_TIME = "2026-10-01T00:00:00Z"


def _bad_input(tmp: Path) -> tuple[Path, Path, dict, dict]:
    """A JSONL feed with every kind of bad row; returns expected reasons by marker."""
    catalog = make_catalog(SampleSpec(users=1, ads=30, seed=2)).table.to_pylist()
    good_ads = []
    for a in catalog:
        a = dict(a, updated_at=GOOD_TIME)
        good_ads.append(a)
    base = dict(good_ads[0])

    def ad(**kw):
        return json.dumps({**base, **kw})

    def drop(field):
        row = dict(base, ad_id=f"ad-missing-{field}")
        row.pop(field)
        return json.dumps(row)

    bad_ads = {
        '{"ad_id": "ad-broken", "title": ': "malformed_json",
        drop("title"): "missing_title",
        ad(ad_id="ad-null-title", title=None): "missing_title",
        ad(ad_id="ad-empty-title", title="   "): "empty_title",
        ad(ad_id="ad-long-title", title="x" * 600): "title_too_long",
        ad(ad_id="ad-ctrl", title="Bell\u0007 Boots"): "control_characters",
        ad(ad_id="ad-newline", title="Two\nlines"): "control_characters",
        ad(ad_id="ad-obj-title", title={"text": "Boots"}): "wrong_type",
        ad(ad_id="ad-bad-time", updated_at="yesterday"): "unparsable_timestamp",
        ad(ad_id="ad-future", updated_at="2031-01-01T00:00:00Z"): "future_timestamp",
        ad(ad_id="ad/../escape"): "invalid_id",
        ad(ad_id="ad-status", status="deleted"): "invalid_status",
        drop("selling_points"): "missing_selling_points",
        ad(ad_id="ad-sp-type", selling_points="not a list"): "invalid_selling_points",
        "[1, 2, 3]": "not_a_json_object",
        b'{"ad_id": "ad-utf8", "title": "Caf\xe9 \xff"}': "invalid_utf8",
    }
    # Conflicts: same instant -> both versions out; different instants -> older out,
    # whether its content changed or it was re-sent unchanged.
    conflict = [ad(ad_id="ad-tie", title="Version A"), ad(ad_id="ad-tie", title="Version B")]
    newer = [ad(ad_id="ad-upd", title="Old title", updated_at="2026-09-01T00:00:00Z"),
             ad(ad_id="ad-upd", title="New title", updated_at="2026-10-15T00:00:00Z"),
             ad(ad_id="ad-same", updated_at="2026-09-01T00:00:00Z"),
             ad(ad_id="ad-same", updated_at="2026-10-15T00:00:00Z")]
    exact = [json.dumps(good_ads[1])]  # an exact copy of a good row
    ads_rows = [json.dumps(a) for a in good_ads] + list(bad_ads) + conflict + newer + exact + [""]
    ads_dir = tmp / "ads"
    write_jsonl(ads_dir / "ads.jsonl", ads_rows)

    good_ad = good_ads[2]["ad_id"]

    def click(**kw):
        return json.dumps({"user_id": "u1", "ad_id": good_ad, "event_time": GOOD_TIME,
                           "event_type": "click", "query": "boots", **kw})

    good_clicks = [click(user_id=f"u{i}", event_time=f"2026-10-0{1 + i % 9}T00:00:00Z")
                   for i in range(40)] + [click(ad_id="ad-upd", user_id="u99")]
    bad_clicks = {
        click(ad_id="ad-nobody"): "unknown_ad",
        click(ad_id="ad-tie", user_id="u-tie"): "unknown_ad",  # its ad was quarantined
        click(user_id="u-t", event_time="not a time"): "unparsable_timestamp",
        click(user_id="u-f", event_time="2031-01-01T00:00:00Z"): "future_timestamp",
        click(user_id="u-e", event_type="hover"): "invalid_event_type",
        click(user_id="u-q", query="boots\u0000drop table"): "control_characters",
        click(user_id={"id": 12345}): "wrong_type",
        click(user_id="u-list", query=["boots", "cheap"]): "wrong_type",
        json.dumps({"ad_id": good_ad, "event_time": GOOD_TIME, "event_type": "click"}):
            "missing_user_id",
        "{not json at all": "malformed_json",
        b'{"user_id": "u-\xc3\x28", "ad_id": "x"}': "invalid_utf8",
    }
    duplicate = [good_clicks[0]]  # an exact copy of a good event
    clicks_dir = tmp / "clicks"
    write_jsonl(clicks_dir / "part-1.jsonl", good_clicks[:20])
    write_jsonl(clicks_dir / "part-2.jsonl", good_clicks[20:] + list(bad_clicks) + duplicate)
    expected_ads = {"bad": bad_ads, "good": len(good_ads) + 2, "rows": len(ads_rows) - 1}
    expected_clicks = {"bad": bad_clicks, "good": len(good_clicks),
                       "rows": len(good_clicks) + len(bad_clicks) + 1}
    return ads_dir, clicks_dir, expected_ads, expected_clicks


def test_every_bad_row_is_quarantined_with_its_reason(tmp_path):
    ads_dir, clicks_dir, exp_ads, exp_clicks = _bad_input(tmp_path / "in")
    cfg = make_config(tmp_path, ads_dir, clicks_dir, "validation.quarantine_threshold=1.0")
    m = extract_features.run(cfg, CYCLE)
    q = table(m, "quarantine")
    by_table = {t: [r for r in q if r["source_table"] == t] for t in ("ads", "clicks")}

    for t, exp in (("ads", exp_ads), ("clicks", exp_clicks)):
        rows = by_table[t]
        for raw, reason in exp["bad"].items():
            if isinstance(raw, bytes):  # invalid UTF-8: exact bytes kept in raw_base64
                kept = [base64.b64decode(r["raw_base64"]) for r in rows
                        if r["reason"] == "invalid_utf8"]
                assert raw in kept
                continue
            hits = [r for r in rows if r["raw"] == raw]
            assert hits, f"{t}: no quarantine row for {raw[:60]!r}"
            assert hits[0]["reason"] == reason, (raw[:60], hits[0]["reasons"])
            assert hits[0]["source_file"].endswith(".jsonl")
        rec = m["reconciliation"][t]
        assert rec["rows_in"] == exp["rows"]
        assert rec["accepted"] == exp["good"]
        assert rec["quarantined"] == len(rows) == rec["rows_in"] - rec["accepted"]

    ads_rec = m["reconciliation"]["ads"]
    assert ads_rec["blank_lines_skipped"] == 1
    assert ads_rec["reasons"]["conflicting_duplicate_ad_id"] == 2  # both tied versions
    assert ads_rec["reasons"]["superseded_ad_version"] == 2  # ad-upd and ad-same
    assert ads_rec["reasons"]["duplicate_row"] == 1
    assert m["reconciliation"]["clicks"]["reasons"]["duplicate_event"] == 1
    superseded = [r for r in by_table["ads"] if "Old title" in r["raw"]]
    assert superseded and superseded[0]["detail"].startswith("superseded by the version")
    active = {a["ad_id"]: a for a in table(m, "active_ads")}
    assert active["ad-upd"]["title"] == "New title"
    assert "ad-tie" not in active
    assert active["ad-same"]["updated_at"].isoformat().startswith("2026-10-15")
    assert len(active) == len({a["ad_id"] for a in table(m, "active_ads")})


def test_quarantine_share_over_threshold_fails_naming_rule_table_and_count(tmp_path):
    ads_dir, clicks_dir, _, _ = _bad_input(tmp_path / "in")
    cfg = make_config(tmp_path, ads_dir, clicks_dir)  # default threshold 1%
    with pytest.raises(DataQualityError) as err:
        extract_features.run(cfg, CYCLE)
    msg = str(err.value)
    assert "\n" not in msg
    assert "table ads:" in msg and "table clicks:" in msg
    assert "threshold 1.0%" in msg
    assert "conflicting_duplicate_ad_id=2" in msg
    assert "unknown_ad=2" in msg
    stage = cfg.lake / "cycles" / CYCLE / "extract_features"
    assert read_manifest(stage) is None  # nothing committed
    failed = stage.parent / ".extract_features.failed"
    assert (failed / "quarantine").is_dir() and str(failed) in msg


def test_raw_suite_flags_a_broken_feed(tmp_path, tiny_sample):
    """Every event without an event_type: the GX raw suite names the expectation."""
    rows = [{"user_id": f"u{i}", "ad_id": "ad-0000001", "event_time": GOOD_TIME}
            for i in range(5)]
    write_jsonl(tmp_path / "clicks" / "c.jsonl", rows)
    cfg = make_config(tmp_path, tiny_sample / "ads", tmp_path / "clicks")
    with pytest.raises(DataQualityError) as err:
        extract_features.run(cfg, CYCLE)
    msg = str(err.value)
    assert "missing_event_type=5" in msg
    assert "expect_column_values_to_not_be_null on clicks.event_type: 5 of 5 rows" in msg


def test_parquet_and_jsonl_inputs_mix(tmp_path, tiny_sample):
    """A JSONL file beside the Parquet ones goes through the same rules."""
    import shutil

    clicks = tmp_path / "clicks"
    shutil.copytree(tiny_sample / "clicks", clicks)
    first_ad = pq.read_table(tiny_sample / "ads").to_pylist()[0]["ad_id"]
    write_jsonl(clicks / "late.jsonl", [
        {"user_id": "u-json", "ad_id": first_ad, "event_time": GOOD_TIME, "event_type": "click"}])
    cfg = make_config(tmp_path, tiny_sample / "ads", clicks)
    m = extract_features.run(cfg, CYCLE)
    users = {r["user_id"] for r in table(m, "user_sequences")}
    assert "u-json" in users
    assert m["inputs"]["clicks"]["files"] == 2


def test_input_folder_errors_are_one_line(tmp_path, tiny_sample):
    cfg = make_config(tmp_path, tmp_path / "nowhere", tiny_sample / "clicks")
    with pytest.raises(UserError, match="input folder for raw ads not found: .*nowhere"):
        extract_features.run(cfg, CYCLE)
    (tmp_path / "empty").mkdir()
    cfg = make_config(tmp_path, tmp_path / "empty", tiny_sample / "clicks")
    with pytest.raises(UserError, match="holds no"):
        extract_features.run(cfg, CYCLE)
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "ads.csv").write_text("a,b\n")
    cfg = make_config(tmp_path, tmp_path / "odd", tiny_sample / "clicks")
    with pytest.raises(UserError, match="unknown format: ads.csv"):
        extract_features.run(cfg, CYCLE)


def test_parquet_without_required_columns_names_the_file(tmp_path, tiny_sample):
    import pyarrow as pa

    (tmp_path / "ads").mkdir()
    pq.write_table(pa.table({"ad_id": ["a1"], "title": ["t"]}), tmp_path / "ads" / "x.parquet")
    cfg = make_config(tmp_path, tmp_path / "ads", tiny_sample / "clicks")
    with pytest.raises(UserError, match=r"x\.parquet lacks required columns: advertiser_id"):
        extract_features.run(cfg, CYCLE)


def test_parquet_files_may_lack_optional_columns_but_not_change_types(tmp_path, tiny_sample):
    import pyarrow as pa

    clicks = tmp_path / "clicks"
    clicks.mkdir()
    full = pq.read_table(tiny_sample / "clicks")
    pq.write_table(full.slice(0, 500), clicks / "a.parquet")
    pq.write_table(full.slice(500).drop_columns(["query"]), clicks / "b.parquet")  # no query
    cfg = make_config(tmp_path, tiny_sample / "ads", clicks)
    m = extract_features.run(cfg, CYCLE)
    assert m["reconciliation"]["clicks"]["rows_in"] == full.num_rows
    assert m["outputs"]["ad_queries"]["rows"] > 0  # queries of a.parquet kept

    retyped = full.slice(0, 10).set_column(
        2, "event_time", pa.array([str(x) for x in full.column("event_time").to_pylist()[:10]]))
    pq.write_table(retyped, clicks / "c.parquet")
    with pytest.raises(UserError, match=r"c\.parquet: column event_time is string"):
        extract_features.run(cfg, CYCLE)


def test_a_damaged_gzip_file_is_a_one_line_error(tmp_path, tiny_sample):
    import gzip

    clicks = tmp_path / "clicks"
    clicks.mkdir()
    line = json.dumps({"user_id": "u1", "ad_id": "ad-0000001", "event_time": GOOD_TIME,
                       "event_type": "click"}) + "\n"
    blob = gzip.compress((line * 2000).encode())
    (clicks / "broken.jsonl.gz").write_bytes(blob[: len(blob) // 2])  # truncated upload
    cfg = make_config(tmp_path, tiny_sample / "ads", clicks)
    with pytest.raises(UserError, match="damaged") as err:
        extract_features.run(cfg, CYCLE)
    assert "\n" not in str(err.value)


def test_a_concurrent_run_of_the_same_cycle_is_refused(tmp_path, tiny_sample):
    import fcntl

    cfg = make_config(tmp_path, tiny_sample / "ads", tiny_sample / "clicks")
    lock_dir = cfg.lake / "cycles" / CYCLE
    lock_dir.mkdir(parents=True)
    with open(lock_dir / ".extract_features.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another run holds the stage
        with pytest.raises(UserError, match="another run of extract_features"):
            extract_features.run(cfg, CYCLE)
