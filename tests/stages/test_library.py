"""publish_library and the library tools against real S3 API servers (moto's server mode,
and rclone's `serve s3` for the embedded default), with faults injected at the HTTP level.

No Spark: each test writes a small `extract_features` and `generate` output that follow
their contracts, runs the real kill_badcases stage, then publishes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from moto.server import ThreadedMotoServer
from typer.testing import CliRunner

from jobs.platform.errors import DataQualityError, UserError
from jobs.platform.library import (
    ServingIndex,
    diff,
    list_versions,
    load_variants,
    read_latest,
    rollback,
    show,
)
from jobs.platform.s3 import open_store
from jobs.stages import kill_badcases, publish_library
from tests.conftest import make_config
from tests.library_support import (
    FaultProxy,
    active_ads_from_catalog,
    generation_row,
    generations_for,
    write_generations,
    write_match_summary,
    write_stage,
)
from tests.library_support import (
    grounded_title as grounded_title_for,
)

A, B, C = "20261101T000000Z", "20261101T050000Z", "20261101T100000Z"


@pytest.fixture(scope="module")
def moto_url():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def creds(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture(scope="module")
def ads() -> pa.Table:
    return active_ads_from_catalog(ads=24, seed=3)


def cfg_for(tmp: Path, endpoint: str | None, *overrides: str):
    cfg = make_config(tmp, tmp / "raw_ads", tmp / "raw_clicks",
                      f"library.endpoint_url={endpoint or 'null'}",
                      f"library.bucket=lib-{uuid.uuid4().hex[:10]}",
                      f"library.embedded_dir={tmp / 's3'}",
                      "library.max_attempts=4", "library.connect_timeout_s=2",
                      "library.read_timeout_s=10", *overrides)
    if endpoint:  # a configured endpoint's bucket is provisioned beforehand (as infra/ does)
        import boto3

        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
            Bucket=cfg.library.bucket)
    return cfg


def prepare(cfg, cycle: str, ads: pa.Table, rows: list[dict] | None = None) -> None:
    """extract_features + generate fixtures for `cycle`, then the real kill_badcases."""
    write_stage(cfg, cycle, "extract_features", {"active_ads": ads})
    write_generations(cfg, cycle, rows if rows is not None else generations_for(ads))
    kill_badcases.run(cfg, cycle, progress=False)


def keys(store) -> list[str]:
    return sorted(o["Key"] for o in store.list_keys(store.prefix + "/"))


def test_publish_layout_manifest_and_no_user_ids(tmp_path, moto_url, creds, ads):
    cfg = cfg_for(tmp_path, moto_url)
    prepare(cfg, A, ads)
    report = tmp_path / "report"
    (report / "plots").mkdir(parents=True)
    (report / "report.html").write_text("<html>cycle report</html>")
    (report / "report.md").write_text("# cycle report")
    (report / "plots" / "kills.png").write_bytes(b"\x89PNG fake-but-bytes")
    write_stage(cfg, A, "report", {})
    import shutil

    shutil.copytree(report, tmp_path / "lake" / "cycles" / A / "report", dirs_exist_ok=True)

    m = publish_library.run(cfg, A, progress=False)
    assert m["latest_before"] is None and m["latest_after"] == A
    with open_store(cfg.library) as store:
        got = keys(store)
        p = store.prefix
        assert f"{p}/LATEST" in got
        assert f"{p}/versions/{A}/creatives.parquet" in got
        assert f"{p}/versions/{A}/manifest.json" in got
        assert f"{p}/versions/{A}/report.html" in got
        assert f"{p}/versions/{A}/plots/kills.png" in got
        advertisers = set(ads.column("advertiser_id").to_pylist())
        assert {k.rsplit("/", 1)[1] for k in got if "/advertisers/" in k} == \
            {f"{a}.jsonl" for a in advertisers}
        assert read_latest(store) == A
        manifest = json.loads(store.get_bytes(f"{p}/versions/{A}/manifest.json"))
        for rel, c in manifest["objects"].items():  # every checksum matches the bytes
            body = store.get_bytes(f"{p}/versions/{A}/{rel}")
            assert hashlib.sha256(body).hexdigest() == c["sha256"] and len(body) == c["bytes"]
        assert set(manifest["lineage"]) == {"extract_features", "match_ads", "generate",
                                            "kill_badcases", "report"}
        assert manifest["counts"]["variants"] == m["outputs"]["library"]["rows"] > 0
        assert manifest["model_versions"]["creator"] == ["creator-test"]
        version, table = load_variants(store)
        assert version == A and table.column_names == publish_library.LIBRARY_SCHEMA.names
        assert "user_id" not in table.column_names
        jsonl = store.get_bytes(next(k for k in got if k.endswith(".jsonl"))).decode()
        assert "user_id" not in jsonl and all(json.loads(x)["cycle_id"] == A
                                              for x in jsonl.splitlines())
    # the stage's manifest records counts and timings for the cycle report
    assert m["counts"]["variants"] > 0 and "upload" in m["timings_s"]


def test_republish_same_cycle_is_one_version_same_bytes(tmp_path, moto_url, creds, ads):
    cfg = cfg_for(tmp_path, moto_url)
    prepare(cfg, A, ads)
    first = publish_library.run(cfg, A, progress=False)
    with open_store(cfg.library) as store:
        before = {k: store.get_bytes(k) for k in keys(store)}
    again = publish_library.run(cfg, A, progress=False)
    assert again["skipped"] is True  # up to date and the remote manifest matches
    forced = publish_library.run(cfg, A, force=True, progress=False)
    assert forced["upload"]["uploaded"] == 0 and forced["upload"]["same"] == first["objects"]
    with open_store(cfg.library) as store:
        after = {k: store.get_bytes(k) for k in keys(store)}
        assert [v["version"] for v in list_versions(store)] == [A]
    assert after == before


def test_slowdown_503_is_retried_and_published_once(tmp_path, moto_url, creds, ads):
    with FaultProxy(moto_url) as proxy:
        cfg = cfg_for(tmp_path, proxy.url)
        prepare(cfg, A, ads)
        proxy.add("PUT", r"/creatives\.parquet$", "503", times=2)
        proxy.add("PUT", r"/LATEST$", "503", times=1)
        proxy.add("PUT", r"/manifest\.json$", "drop", times=1)  # a transient dropped upload
        m = publish_library.run(cfg, A, progress=False)
        assert m["latest_after"] == A
        assert proxy.count("PUT", r"/creatives\.parquet$", 503) == 2
        assert proxy.count("PUT", r"/creatives\.parquet$", 200) == 1  # published once
        assert proxy.count("PUT", r"/LATEST$", 503) == 1
        assert proxy.count("PUT", r"/manifest\.json$", -1) == 1
        assert proxy.count("PUT", r"/manifest\.json$", 200) == 1
        with open_store(cfg.library) as store:
            assert read_latest(store) == A
            assert load_variants(store)[1].num_rows == m["outputs"]["library"]["rows"]


def test_dropped_connection_leaves_latest_and_rerun_completes(tmp_path, moto_url, creds, ads):
    with FaultProxy(moto_url) as proxy:
        cfg = cfg_for(tmp_path, proxy.url, "library.max_attempts=2")
        prepare(cfg, A, ads)
        publish_library.run(cfg, A, progress=False)
        changed = [dict(r, title=r["title"] + " for hikers") if r["cluster_id"] == 0 else r
                   for r in generations_for(ads)]
        prepare(cfg, B, ads, changed)
        rule = proxy.add("PUT", rf"/versions/{B}/creatives\.parquet$", "drop", times=1000)
        with pytest.raises(Exception) as err:
            publish_library.run(cfg, B, progress=False)
        assert not isinstance(err.value, UserError)  # infrastructure: Airflow retries it
        assert proxy.count("PUT", rf"/versions/{B}/creatives\.parquet$", -1) >= 2  # retried
        with open_store(cfg.library) as store:
            assert read_latest(store) == A
            versions = {v["version"]: v["complete"] for v in list_versions(store)}
            assert versions == {A: True, B: False}
            assert load_variants(store)[0] == A  # readers still get A
        rule.times = 0  # the network is back
        m = publish_library.run(cfg, B, progress=False)
        assert m["latest_before"] == A and m["latest_after"] == B
        with open_store(cfg.library) as store:
            assert read_latest(store) == B
            assert all(v["complete"] for v in list_versions(store))


def test_killed_publish_keeps_previous_version_served(tmp_path, moto_url, creds, ads):
    with FaultProxy(moto_url) as proxy:
        cfg = cfg_for(tmp_path, proxy.url)
        prepare(cfg, A, ads)
        publish_library.run(cfg, A, progress=False)
        changed = [dict(r, title=r["title"] + " for travelers") for r in generations_for(ads)]
        prepare(cfg, B, ads, changed)
        hold = proxy.add("PUT", rf"/versions/{B}/advertisers/", "hold", times=1)
        sets = [f"lake={cfg.lake}", f"library.endpoint_url={proxy.url}",
                f"library.bucket={cfg.library.bucket}", f"inputs.ads={cfg.inputs.ads}",
                f"inputs.clicks={cfg.inputs.clicks}"]
        cli = str(Path(sys.executable).with_name("creative-factory"))
        proc = subprocess.Popen([cli, "publish-library", "--cycle-id", B,
                                 *[x for s in sets for x in ("--set", s)]],
                                env={**os.environ, "CF__LIBRARY__MAX_ATTEMPTS": "2"},
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.time() + 90
        while hold.hits == 0 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert hold.hits == 1, proc.stdout.read().decode()[-2000:] if proc.poll() else "timeout"
        while proc.poll() is None and time.time() < deadline and proxy.count(
                "PUT", rf"/versions/{B}/", 200) == 0:
            time.sleep(0.05)  # until another upload of the pool has landed
        proc.send_signal(signal.SIGKILL)  # the task dies mid-publish
        proc.wait()
        hold.release.set()
        with open_store(cfg.library) as store:
            assert read_latest(store) == A
            assert {v["version"]: v["complete"] for v in list_versions(store)} == \
                {A: True, B: False}
            assert any(f"/versions/{B}/" in k for k in keys(store))  # some objects landed
            version, table = load_variants(store)
            assert version == A and not any(t.endswith("for travelers")
                                            for t in table.column("title").to_pylist())
        m = publish_library.run(cfg, B, progress=False)  # the retry completes it
        assert m["latest_after"] == B and m["upload"]["same"] >= 1


def test_gate_failure_publishes_nothing(tmp_path, moto_url, creds, ads):
    cfg = cfg_for(tmp_path, moto_url)
    ad = ads.to_pylist()[0]
    rows = [generation_row(ad, 0, "A grounded title u12345678"),
            generation_row(ad, 1, f"{ad['title']} for runners")]
    passing = pa.Table.from_pylist(rows).drop_columns([])
    write_stage(cfg, A, "extract_features", {"active_ads": ads})
    write_match_summary(cfg, A, rows)
    write_stage(cfg, A, "kill_badcases", {"passing": passing, "verdicts": passing})
    with pytest.raises(DataQualityError) as err:
        publish_library.run(cfg, A, progress=False)
    assert "not_match_regex" in str(err.value) and "Nothing was uploaded" in str(err.value)
    with open_store(cfg.library) as store:
        assert keys(store) == []


@pytest.mark.parametrize("title, expectation", [
    ("For readers for a a a", "repeated word"),
    ('Avery Labels 1" x 11" x 11" x 11"', "repeated bigram"),
    ("Avery Labels, Made in the", "cut-off ending"),
    ("For the Avery", "at least 2 content words"),
])
def test_gate_refuses_degenerate_text_the_killer_let_through(tmp_path, moto_url, creds, ads,
                                                             title, expectation):
    cfg = cfg_for(tmp_path, moto_url)
    ad = ads.to_pylist()[0]
    rows = [generation_row(ad, 0, title), generation_row(ad, 1, f"{ad['title']} for runners")]
    passing = pa.Table.from_pylist(rows)
    write_match_summary(cfg, A, rows)
    write_stage(cfg, A, "kill_badcases", {"passing": passing, "verdicts": passing})
    with pytest.raises(DataQualityError) as err:
        publish_library.run(cfg, A, progress=False)
    assert f"({expectation}) on library variants.title: 1 of 2 rows" in str(err.value)


def test_gate_refuses_a_cycle_that_lost_most_of_its_titles(tmp_path, moto_url, creds, ads):
    cfg = cfg_for(tmp_path, moto_url)
    good = generations_for(ads)
    prepare(cfg, A, ads, good)
    publish_library.run(cfg, A, progress=False)  # version A is served
    # cycle B: 100 requests, of which only the first 20 have a title (the rest killed)
    requests = [generation_row(a, k, grounded_title_for(a, k)) for a in ads.to_pylist()
                for k in range(5)][:100]
    write_match_summary(cfg, B, requests)
    passing = pa.Table.from_pylist(requests[:20])
    write_stage(cfg, B, "kill_badcases", {"passing": passing, "verdicts": passing})
    with pytest.raises(DataQualityError) as err:
        publish_library.run(cfg, B, progress=False)
    msg = str(err.value)
    assert "cycle.passing_share: 20 passing variants of 100 requests = 20.0% < " \
           "library.min_passing_share 30%" in msg, msg
    assert "ads_covered_share" in msg and "LATEST is unchanged" in msg
    with open_store(cfg.library) as store:
        assert read_latest(store) == A
        assert not [k for k in keys(store) if f"/versions/{B}/" in k]
    # an operator who accepts the cycle lowers the thresholds for it (runbook)
    loose = cfg.model_copy(update={"library": cfg.library.model_copy(update={
        "min_passing_share": 0.1, "min_ads_covered_share": 0.1})})
    publish_library.run(loose, B, progress=False)
    with open_store(cfg.library) as store:
        assert read_latest(store) == B


def test_unsafe_ids_rejected_and_never_leave_the_prefix(tmp_path, moto_url, creds, ads):
    cfg = cfg_for(tmp_path, moto_url)
    good = generations_for(ads)
    ad = ads.to_pylist()[0]
    evil = [dict(generation_row(ad, 7, f"{ad['title']} for runners"), ad_id=x)
            for x in ("../../etc/passwd", "ad/../../x", "ad\x00nul", "ad\nnewline")]
    evil += [dict(generation_row(ad, 8, f"{ad['title']} for hikers"), advertiser_id=x)
             for x in ("adv/evil", "..", "adv\x1b[31m")]
    prepare(cfg, A, ads, good + evil)
    verdicts = pq.read_table(tmp_path / "lake" / "cycles" / A / "kill_badcases" /
                             "verdicts.parquet").to_pylist()
    flagged = [v for v in verdicts if "unsafe_id" in v["reasons"]]
    assert len(flagged) == len(evil) and not any(v["passed"] for v in flagged)
    publish_library.run(cfg, A, progress=False)
    with open_store(cfg.library) as store:
        for k in keys(store):
            assert k.startswith(store.prefix + "/") and ".." not in k and "\x00" not in k
    # the gate refuses unsafe ids even if a passing table carried one
    cfg2 = cfg_for(tmp_path / "direct", moto_url)
    bad = pa.Table.from_pylist([dict(generation_row(ad, 0, f"{ad['title']} for runners"),
                                     advertiser_id="../outside")])
    write_match_summary(cfg2, A, bad.to_pylist())
    write_stage(cfg2, A, "kill_badcases", {"passing": bad, "verdicts": bad})
    with pytest.raises(DataQualityError, match="unsafe ids"):
        publish_library.run(cfg2, A, progress=False)
    with open_store(cfg2.library) as store:
        assert keys(store) == []


def test_retention_rollback_diff_show_and_late_rerun(tmp_path, moto_url, creds, ads):
    cfg = cfg_for(tmp_path, moto_url, "library.keep_versions=2")
    rows_a = generations_for(ads)
    prepare(cfg, A, ads, rows_a)
    publish_library.run(cfg, A, progress=False)
    ad0 = ads.to_pylist()[0]
    rows_b = [dict(r, title=r["title"] + " for hikers") if r["ad_id"] == ad0["ad_id"] else r
              for r in rows_a if not (r["ad_id"] == ads.to_pylist()[1]["ad_id"])]
    prepare(cfg, B, ads, rows_b)
    publish_library.run(cfg, B, progress=False)
    with open_store(cfg.library) as store:
        d = diff(store, A, B)
        assert d["totals"]["changed"] == sum(1 for r in rows_a if r["ad_id"] == ad0["ad_id"])
        assert d["totals"]["removed"] == 3 and d["totals"]["added"] == 0
        assert ad0["advertiser_id"] in d["advertisers"]
        v, shown = show(store, ad0["ad_id"], cluster_id=1)
        assert v == B and len(shown) == 1 and shown[0]["title"].endswith("for hikers")
        assert rollback(store, A) == B
        assert read_latest(store) == A and load_variants(store)[0] == A
        with pytest.raises(UserError, match="not complete"):
            rollback(store, "20200101T000000Z")
        rollback(store, B)
    # a late re-run of an older cycle never moves LATEST backwards
    m = publish_library.run(cfg, A, force=True, progress=False)
    assert m["latest_after"] == B
    prepare(cfg, C, ads, rows_a)
    m = publish_library.run(cfg, C, progress=False)
    assert m["deleted_versions"] == [A]
    with open_store(cfg.library) as store:
        assert [(v["version"], v["latest"]) for v in list_versions(store)] == \
            [(B, False), (C, True)]


def test_serving_lookup_user_to_cluster_to_variant(tmp_path, moto_url, creds, ads):
    cfg = cfg_for(tmp_path, moto_url)
    ad0, ad1 = ads.to_pylist()[:2]
    rows = [generation_row(ad0, 0, f"{ad0['title']} for runners"),
            generation_row(ad0, 1, f"{ad0['title']} for home cooks", rank=2),
            generation_row(ad0, 0, f"{ad0['title']} for gamers", strategy="query_aware",
                           query="cheap headphones")]
    prepare(cfg, A, ads, rows)
    publish_library.run(cfg, A, progress=False)
    write_stage(cfg, A, "cluster_users", {"assignments": pa.table({
        "user_id": ["u00000001", "u00000002", "u00000003"],
        "cluster_id": pa.array([0, 1, 2], pa.int32()),
        "distance": pa.array([0.1, 0.2, 0.3], pa.float32()),
        "centroid_version": ["cv-test"] * 3})})
    with open_store(cfg.library) as store:
        index = ServingIndex.from_library(cfg, store)
    assert index.lookup(ad0["ad_id"], "u00000001").title == f"{ad0['title']} for runners"
    hit = index.lookup(ad0["ad_id"], "u00000001", query="Cheap  Headphones")
    assert (hit.title, hit.strategy) == (f"{ad0['title']} for gamers", "query_aware")
    assert index.lookup(ad0["ad_id"], "u00000002").title.endswith("for home cooks")
    fallback = index.lookup(ad0["ad_id"], "u00000003")  # cluster 2 has no variant
    assert (fallback.title, fallback.source) == (ad0["title"], "original")
    assert index.lookup(ad1["ad_id"], "u00000001").title == ad1["title"]  # no variants at all
    assert index.lookup(ad0["ad_id"], "u-unknown").source == "original"
    assert index.lookup("ad-missing", "u00000001").source == "unknown_ad"


def test_library_cli_against_the_embedded_rclone_server(tmp_path, ads, monkeypatch):
    """The default path: endpoint_url null starts rclone serve s3 over embedded_dir."""
    from jobs.entrypoints.cli import app

    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(k, raising=False)
    cfg = cfg_for(tmp_path, None)
    prepare(cfg, A, ads)
    m = publish_library.run(cfg, A, progress=False)
    on_disk = tmp_path / "s3" / cfg.library.bucket / cfg.library.prefix
    assert (on_disk / "LATEST").read_text() == A
    assert (on_disk / "versions" / A / "manifest.json").is_file()
    table = pq.read_table(io.BytesIO((on_disk / "versions" / A / "creatives.parquet")
                                     .read_bytes()))
    assert table.num_rows == m["outputs"]["library"]["rows"]
    # a forced re-publish through a fresh server (rclone drops our sha256 metadata across
    # restarts) recognises every object by its ETag and uploads nothing again
    again = publish_library.run(cfg, A, force=True, progress=False)
    assert again["upload"]["uploaded"] == 0 and again["upload"]["same"] == m["objects"]
    assert publish_library.run(cfg, A, progress=False)["skipped"]  # and unforced: skipped
    sets = [f"lake={cfg.lake}", f"library.bucket={cfg.library.bucket}",
            f"library.embedded_dir={tmp_path / 's3'}", f"inputs.ads={cfg.inputs.ads}",
            f"inputs.clicks={cfg.inputs.clicks}"]
    args = [x for s in sets for x in ("--set", s)]
    runner = CliRunner()
    out = runner.invoke(app, ["library", "versions", *args])
    assert out.exit_code == 0, out.output
    assert A in out.output and "LATEST" in out.output
    ad = ads.to_pylist()[0]
    out = runner.invoke(app, ["library", "show", "--ad", ad["ad_id"], "--cluster", "0", *args])
    assert out.exit_code == 0 and json.loads(out.output.splitlines()[1])["ad_id"] == ad["ad_id"]
    out = runner.invoke(app, ["library", "rollback", "20200101T000000Z", *args])
    assert out.exit_code == 2 and "not complete" in out.output
    out = runner.invoke(app, ["library", "diff", A, A, *args])
    assert out.exit_code == 0 and "0 added, 0 removed, 0 changed" in out.output
