from datetime import UTC, datetime, timedelta, timezone

import pytest

from jobs.errors import UserError
from jobs.lake import MANIFEST, StageRun, cycle_id_for, parse_cycle_id, read_manifest


def test_cycle_id_comes_from_the_interval_end_in_utc():
    end = datetime(2026, 11, 21, 20, 0, tzinfo=UTC)
    assert cycle_id_for(end) == "20261121T200000Z"
    east = end.astimezone(timezone(timedelta(hours=8)))
    assert cycle_id_for(east) == "20261121T200000Z"
    assert parse_cycle_id("20261121T200000Z") == end
    with pytest.raises(ValueError):
        cycle_id_for(datetime(2026, 11, 21))
    with pytest.raises(UserError, match="YYYYMMDDTHHMMSSZ"):
        parse_cycle_id("2026-11-21")


def _run(tmp_path, inputs, config_hash="c1"):
    return StageRun(tmp_path, "20261121T200000Z", "stage", inputs, config_hash)


def test_commit_is_staged_then_swapped_and_manifest_written_last(tmp_path):
    run = _run(tmp_path, {"a": 1})
    out = run.begin()
    (out / "table").mkdir()
    (out / "table" / "part.txt").write_text("v1")
    assert read_manifest(run.final) is None  # nothing visible before commit
    m = run.commit({"table": {"rows": 1}})
    assert (run.final / MANIFEST).is_file()
    assert read_manifest(run.final)["outputs"] == {"table": {"rows": 1}}
    assert m["path"] == str(run.final)
    assert not list(run.final.parent.glob(".stage.*"))  # no staging left behind


def test_same_inputs_skip_and_changed_inputs_or_config_rerun(tmp_path):
    first = _run(tmp_path, {"a": 1})
    first.begin()
    first.commit({})
    assert _run(tmp_path, {"a": 1}).up_to_date() is not None
    assert _run(tmp_path, {"a": 2}).up_to_date() is None
    assert _run(tmp_path, {"a": 1}, config_hash="c2").up_to_date() is None


def test_forced_rerun_replaces_the_stage_whole(tmp_path):
    first = _run(tmp_path, {"a": 1})
    (first.begin() / "old_table").mkdir()
    first.commit({})
    second = _run(tmp_path, {"a": 1})
    (second.begin() / "new_table").mkdir()
    second.commit({})
    assert (second.final / "new_table").is_dir()
    assert not (second.final / "old_table").exists()


def test_abandon_keeps_the_failed_attempt_and_leaves_the_committed_one(tmp_path):
    good = _run(tmp_path, {"a": 1})
    good.begin()
    good.commit({"ok": True})
    bad = _run(tmp_path, {"a": 2})
    (bad.begin() / "quarantine").mkdir()
    failed = bad.abandon(keep=True)
    assert (failed / "quarantine").is_dir()
    assert read_manifest(good.final)["outputs"] == {"ok": True}


def test_a_kill_between_the_renames_of_commit_is_recovered(tmp_path):
    import os

    good = _run(tmp_path, {"a": 1})
    (good.begin() / "t").mkdir()
    good.commit({"ok": True})
    # simulate a kill right after `final -> .old-*`, before `staging -> final`
    os.replace(good.final, good.final.parent / ".stage.old-deadbeef")
    (good.final.parent / ".stage.staging-cafebabe").mkdir()
    retry = _run(tmp_path, {"a": 2})
    retry.begin()
    assert read_manifest(good.final)["outputs"] == {"ok": True}  # the old stage is back
    assert not (good.final.parent / ".stage.staging-cafebabe").exists()


def test_exclusive_refuses_a_second_holder(tmp_path):
    first = _run(tmp_path, {"a": 1})
    with first.exclusive():
        with pytest.raises(UserError, match="in progress"):
            with _run(tmp_path, {"a": 1}).exclusive():
                pass
    with _run(tmp_path, {"a": 1}).exclusive():  # released afterwards
        pass
