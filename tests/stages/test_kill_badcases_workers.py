"""kill_badcases judged by a pool of worker processes (no Spark: `active_ads` from the sample
catalog): the same verdicts, rows and order for any number of workers, and a change of
`badcase.workers` alone does not re-run the stage."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from jobs.platform.config import load_config
from jobs.stages import kill_badcases
from tests.library_support import (
    active_ads_from_catalog,
    generation_row,
    generations_for,
    generations_table,
    write_generations,
    write_stage,
)

CYCLE = "20261101T000000Z"


@pytest.fixture
def cycle(tmp_path, monkeypatch):
    """A cycle with 40 ads' generations: grounded titles, audience framings, planted bad
    cases and duplicates; the pool used from 1 row per worker, in chunks of 7 rows."""
    monkeypatch.setattr(kill_badcases, "MIN_ROWS_PER_WORKER", 1)
    monkeypatch.setattr(kill_badcases, "CHUNK_ROWS", 7)
    cfg = load_config(overrides=[f"lake={tmp_path / 'lake'}"], environ={})
    active = active_ads_from_catalog(ads=40, seed=5)
    write_stage(cfg, CYCLE, "extract_features", {"active_ads": active})
    ads = active.to_pylist()
    rows = generations_for(active, clusters=4)
    for k, ad in enumerate(ads):
        head = ad["title"].split(",")[0].split(" - ")[0]
        rows += [
            generation_row(ad, 10, f"For busy office workers: {head}"),
            generation_row(ad, 11, [f"{head} - now in Paris", f"For seniors: {head}",
                                    f"{head}, 300% more", f"For moms: {head}"][k % 4]),
            generation_row(ad, 12, f"{head} for weekend joggers", score=0.9),
            generation_row(ad, 12, f"{head} for weekend joggers", score=0.1,
                           strategy="query_aware", query="joggers"),
        ]
    rows.append(dict(generation_row(ads[0], 13, "Anything at all"), ad_id="../evil"))
    write_generations(cfg, CYCLE, rows)
    return cfg, active, rows


def test_same_verdicts_for_any_number_of_workers(cycle):
    cfg, active, rows = cycle
    table = generations_table(rows)
    one = kill_badcases.judge_rows(table, cfg, active, progress=False, workers=1)
    for workers in (2, 3):
        assert kill_badcases.judge_rows(table, cfg, active, progress=False,
                                        workers=workers) == one
    reasons, _ = one
    assert reasons[-1] == ["unsafe_id"]
    assert any(r == [] for r in reasons) and any("protected_attribute" in r for r in reasons)
    assert sum(r == ["duplicate_variant"] for r in reasons) == len(active)


def test_stage_outputs_identical_and_workers_not_in_config_hash(cycle):
    cfg, _, rows = cycle
    cfg.badcase.workers = 1
    first = kill_badcases.run(cfg, CYCLE, progress=False)
    assert first["workers"] == 1
    verdicts = pq.read_table(first["outputs"]["verdicts"]["path"])
    passing = pq.read_table(first["outputs"]["passing"]["path"])
    cfg.badcase.workers = 2
    assert kill_badcases.run(cfg, CYCLE, progress=False)["skipped"] is True
    again = kill_badcases.run(cfg, CYCLE, force=True, progress=False)
    assert again["workers"] == 2
    assert pq.read_table(again["outputs"]["verdicts"]["path"]).equals(verdicts)
    assert pq.read_table(again["outputs"]["passing"]["path"]).equals(passing)
    for key in ("counts", "kills_by_reason", "kills_by_rule"):
        assert again[key] == first[key]
    assert verdicts.column("request_id").to_pylist() == [r["request_id"] for r in rows]
