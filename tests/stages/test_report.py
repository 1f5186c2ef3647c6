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
