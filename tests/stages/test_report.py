"""The cycle report: built from whatever stages ran, plots embedded, ad text escaped."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.platform.lake import StageRun
from jobs.stages import report
from tests.conftest import CYCLE

pytestmark = pytest.mark.spark


def test_report_covers_the_stages_that_ran(matched_cycle, tmp_path):
    cfg, m = matched_cycle
    cfg = cfg.model_copy(deep=True)
    # a generate output (its contract's columns) with a title that is not safe as HTML
    gen = StageRun(cfg.lake, CYCLE, "generate", {"t": 1}, "t")
    out = gen.begin()
    pq.write_table(pa.table({
        "request_id": ["r1", "r2"], "ad_id": ["ad-1", "ad-1"], "cluster_id": [3, 4],
        "strategy": ["query_free", "query_aware"], "query": [None, "trail shoes"],
        "title": ["<script>alert(1)</script> Trail shoes", "Trail shoes for runners"],
        "original_title": ["Trail shoes", "Trail shoes"]}), out / "generations.parquet")
    gen.commit({"generations": {"path": str(gen.final / "generations.parquet"), "rows": 2}})
    try:
        r = report.run(cfg, CYCLE)
        folder = cfg.lake / "cycles" / CYCLE / "report"
        page = (folder / "report.html").read_text()
        for section in ("Stages", "Input quality", "User clusters", "Ad-cluster matching",
                        "Sample variants"):
            assert f"<h2>{section}</h2>" in page
        assert "<script>" not in page and "&lt;script&gt;" in page
        assert page.count("data:image/png;base64,") == len(r["plots"]) >= 4
        for plot in ("durations", "cluster_sizes", "requests", "coverage"):
            assert (folder / f"{plot}.png").stat().st_size > 1000
        md = (folder / "report.md").read_text()
        assert f"cycle {CYCLE}" in md and "kill_badcases | not run" in md
        assert r["headline"]["stages not run"] == "kill_badcases"
        assert report.run(cfg, CYCLE)["skipped"]
    finally:
        import shutil

        shutil.rmtree(cfg.lake / "cycles" / CYCLE / "generate")
        shutil.rmtree(cfg.lake / "cycles" / CYCLE / "report", ignore_errors=True)


def test_report_measures_personalization_of_the_passing_variants(matched_cycle):
    import json
    import shutil

    cfg, m = matched_cycle
    cents = pq.read_table(m["cluster_users"]["outputs"]["centroids"]["path"]).to_pylist()
    clusters = [c["cluster_id"] for c in cents][:3]
    assert len(clusters) == 3
    titles = ["Trail shoes for weekend hikers", "Trail shoes, light and quick",
              "Trail shoes, waterproof"]
    ids = {"advertiser_id": "adv-1", "score": 0.5, "model_version": "creator-test",
           "centroid_version": "cv-test"}
    rows = [{"ad_id": "ad-1", "cluster_id": c, "strategy": "query_free", "query": None,
             "title": t, "original_title": "Trail shoes", "selling_points": ["waterproof"],
             **ids} for c, t in zip(clusters, titles, strict=True)]
    rows.append({"ad_id": "ad-1", "cluster_id": clusters[0], "strategy": "query_aware",
                 "query": "waterproof shoes", "title": "Waterproof Trail shoes",
                 "original_title": "Trail shoes", "selling_points": ["waterproof"], **ids})
    kill = StageRun(cfg.lake, CYCLE, "kill_badcases", {"t": 1}, "t")
    out = kill.begin()
    pq.write_table(pa.Table.from_pylist(rows), out / "passing.parquet")
    kill.commit({"passing": {"path": str(kill.final / "passing.parquet"), "rows": len(rows)}})
    try:
        report.run(cfg, CYCLE, force=True)
        folder = cfg.lake / "cycles" / CYCLE / "report"
        p = json.loads((folder / "report.json").read_text())["personalization"]
        assert p["distinct"] == {"ads": 1, "share_3plus_distinct": 1.0, "one_title_for_all": 0.0,
                                 "mean_distinct_ratio": 1.0}
        assert p["fidelity"]["pairs"] == 3 and 0 <= p["fidelity"]["fidelity"] <= 1
        assert p["fidelity_control"]["pairs"] == 3
        # the query-aware title takes up "waterproof", which its cluster's query-free lacks
        # ("waterproof" is not in the original title: an open pair)
        assert p["query_uptake"] == {"pairs": 1, "uptake": 1.0, "open_pairs": 1,
                                     "uptake_open": 1.0}
        glance = p["at_a_glance"][0]
        assert [c["title"] for c in glance["clusters"]] == [
            t for _, t in sorted(zip(clusters, titles, strict=True))]
        assert all(c["interests"] for c in glance["clusters"])  # what its users clicked
        page = (folder / "report.html").read_text()
        assert "<h2>Personalization</h2>" in page and "cross-cluster fidelity" in page
        # 4 passing variants of the cycle's many requests: the publish gate will refuse it,
        # and the report says so before publish_library runs
        headline = json.loads((folder / "report.json").read_text())["publish_gate"]
        assert headline["passes"] is False and "cycle.passing_share" in headline["failures"][0]
        assert "REFUSES this cycle" in page
        assert "what its users clicked" in (folder / "report.md").read_text()
    finally:
        shutil.rmtree(cfg.lake / "cycles" / CYCLE / "kill_badcases")
        shutil.rmtree(cfg.lake / "cycles" / CYCLE / "report", ignore_errors=True)
