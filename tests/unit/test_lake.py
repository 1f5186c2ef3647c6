from datetime import UTC, datetime, timedelta, timezone

import pytest

from jobs.platform.errors import UserError
from jobs.platform.lake import (
    MANIFEST,
    ShardedStage,
    StageOutput,
    StageRun,
    cycle_id_for,
    failed_dir,
    parse_cycle_id,
    read_manifest,
    run_stage,
    stage_dir,
)

CID = "20261121T200000Z"


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


# --- run_stage and ShardedStage: the one way every stage runs --------------------------------

def _cfg(tmp_path):
    from jobs.platform.config import load_config

    return load_config(overrides=[f"lake={tmp_path}"], environ={})


def _write(name: str, text: str):
    def build(out):
        (out / name).write_text(text)
        return StageOutput({"t": {"path": name, "rows": 1}}, {"note": text})
    return build


def test_run_stage_skips_forces_and_keeps_the_config(tmp_path):
    cfg = _cfg(tmp_path)
    first = run_stage(cfg, CID, "s", inputs={"a": 1}, config_hash="h", build=_write("t", "v1"))
    assert first["skipped"] is False and first["note"] == "v1"
    assert first["outputs"]["t"]["path"] == str(stage_dir(tmp_path, CID, "s") / "t")
    assert first["config"] == cfg.as_dict()  # the resolved config it ran with
    again = run_stage(cfg, CID, "s", inputs={"a": 1}, config_hash="h", build=_write("t", "v2"))
    assert again["skipped"] is True and again["note"] == "v1"
    forced = run_stage(cfg, CID, "s", inputs={"a": 1}, config_hash="h", build=_write("t", "v3"),
                       force=True)
    assert forced["skipped"] is False
    assert (stage_dir(tmp_path, CID, "s") / "t").read_text() == "v3"
    assert read_manifest(stage_dir(tmp_path, CID, "s"))["note"] == "v3"


def test_run_stage_failure_keeps_the_attempt_and_the_committed_stage(tmp_path):
    cfg = _cfg(tmp_path)
    run_stage(cfg, CID, "s", inputs={"a": 1}, config_hash="h", build=_write("t", "good"))

    def broken(out):
        (out / "partial").write_text("half")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        run_stage(cfg, CID, "s", inputs={"a": 2}, config_hash="h", build=broken)
    assert (failed_dir(tmp_path, CID, "s") / "partial").read_text() == "half"
    assert (stage_dir(tmp_path, CID, "s") / "t").read_text() == "good"

    def broken_again(out):
        (out / "partial").write_text("second")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        run_stage(cfg, CID, "s", inputs={"a": 2}, config_hash="h", build=broken_again,
                  keep_failed=False)
    # removed, not kept: the earlier failed attempt is still the one to inspect
    assert (failed_dir(tmp_path, CID, "s") / "partial").read_text() == "half"
    assert not list(stage_dir(tmp_path, CID, "s").parent.glob(".s.staging-*"))


def test_run_stage_still_valid_can_veto_a_skip(tmp_path):
    cfg = _cfg(tmp_path)
    run_stage(cfg, CID, "s", inputs={"a": 1}, config_hash="h", build=_write("t", "v1"))
    m = run_stage(cfg, CID, "s", inputs={"a": 1}, config_hash="h", build=_write("t", "v2"),
                  still_valid=lambda existing: existing["note"] != "v1")
    assert m["skipped"] is False and m["note"] == "v2"


class _Shards:
    """A two-shard stage whose shards write their number and a run label."""

    def __init__(self, tmp_path, label="r1", inputs=None):
        self.stage = ShardedStage(_cfg(tmp_path), CID, "sh", inputs=inputs or {"a": 1},
                                  config_hash="h", shards=2)
        self.label, self.built = label, []

    def shard(self, i, force=False):
        def build(out):
            self.built.append(i)
            (out / "part.txt").write_text(f"{self.label}-{i}")
            return {"rows": 1}
        return self.stage.run_shard(i, build, force=force)

    def commit(self, force=False):
        def gather(dirs, counts, out):
            text = "|".join((d / "part.txt").read_text() for d in dirs)
            (out / "all.txt").write_text(text)
            return StageOutput({"all": {"path": "all.txt", "rows": sum(c["rows"] for c in counts)}})
        return self.stage.commit(gather, force=force)


def _work_folders(tmp_path):
    return list(stage_dir(tmp_path, CID, "sh").parent.glob(".sh.shards-*"))


def test_sharded_stage_commits_once_and_sweeps_its_work(tmp_path):
    s = _Shards(tmp_path)
    assert s.shard(0)["skipped"] is False
    with pytest.raises(UserError, match=r"shards \[1\] have not run"):
        s.commit()
    s.shard(1)
    assert s.shard(1)["skipped"] is True  # done-file: not built twice
    m = s.commit()
    assert m["skipped"] is False and m["outputs"]["all"]["rows"] == 2
    assert (stage_dir(tmp_path, CID, "sh") / "all.txt").read_text() == "r1-0|r1-1"
    assert _work_folders(tmp_path) == []
    with pytest.raises(UserError, match="outside"):
        s.shard(2)


def test_a_committed_sharded_stage_skips_its_shards_on_rerun(tmp_path):
    s = _Shards(tmp_path)
    s.shard(0), s.shard(1), s.commit()
    again = _Shards(tmp_path, label="r2")
    assert again.shard(0) == {"skipped": True, "reason": "stage committed"}
    assert again.shard(1)["skipped"] is True and again.built == []  # nothing recomputed
    assert again.commit()["skipped"] is True
    assert _work_folders(tmp_path) == []


def test_a_forced_sharded_rerun_replaces_the_stage_whole(tmp_path):
    s = _Shards(tmp_path)
    s.shard(0), s.shard(1)
    before = s.commit()
    forced = _Shards(tmp_path, label="r2")
    forced.shard(0, force=True)
    forced.shard(1)  # the force mark makes every shard of this attempt re-run
    assert forced.built == [0, 1]
    after = forced.commit()  # the force mark makes the commit replace the stage
    assert after["skipped"] is False and after["finished_at"] != before["finished_at"]
    assert (stage_dir(tmp_path, CID, "sh") / "all.txt").read_text() == "r2-0|r2-1"
    assert _work_folders(tmp_path) == []


def test_a_killed_shard_resumes_from_its_folder(tmp_path):
    s = _Shards(tmp_path)

    def dies(out):
        (out / "part.txt").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        s.stage.run_shard(0, dies)
    resumed = []

    def resume(out):
        resumed.append((out / "part.txt").read_text())  # what the killed attempt left
        (out / "part.txt").write_text("r1-0")
        return {"rows": 1}

    s.stage.run_shard(0, resume)
    s.shard(1)
    assert resumed == ["half"]
    assert s.commit()["outputs"]["all"]["rows"] == 2
