"""The lake and the one way to run a stage.

Every stage writes under `{lake}/cycles/{cycle_id}/{stage}/`. It first writes into a
staging folder beside it, then swaps the staging folder into place and writes the
`_SUCCESS` manifest last, so a reader that sees `_SUCCESS` sees a complete stage. A stage
whose manifest records the same input fingerprint and config hash is skipped on re-run;
`force=True` replaces the stage whole.

Stages do not do this by hand. `run_stage` owns lock -> up-to-date check -> staging ->
commit or abandon for a stage computed in one call; `ShardedStage` does the same for a
stage computed in shards (one Airflow task, or process, per shard) and committed once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jobs import __version__
from jobs.platform.config import Config
from jobs.platform.errors import UserError

MANIFEST = "_SUCCESS"
log = logging.getLogger(__name__)


def cycle_id_for(data_interval_end: datetime) -> str:
    """The cycle id comes from the Airflow data interval, never from the wall clock."""
    if data_interval_end.tzinfo is None:
        raise ValueError("data_interval_end must be timezone-aware")
    return data_interval_end.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def parse_cycle_id(cycle_id: str) -> datetime:
    try:
        return datetime.strptime(cycle_id, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise UserError(
            f"cycle id {cycle_id!r} is not of the form YYYYMMDDTHHMMSSZ (e.g. 20261121T200000Z)"
        ) from None


def stage_dir(lake: Path, cycle_id: str, stage: str) -> Path:
    return Path(lake) / "cycles" / cycle_id / stage


def failed_dir(lake: Path, cycle_id: str, stage: str) -> Path:
    """Where the staging folder of a failed attempt is kept for inspection."""
    return stage_dir(lake, cycle_id, stage).parent / f".{stage}.failed"


def latest_cycle_with(lake: Path, stage: str) -> str:
    """The most recent cycle with a committed `stage` (what training uses by default)."""
    cycles = sorted(p.parent.parent.name for p in
                    (Path(lake) / "cycles").glob(f"*/{stage}/{MANIFEST}"))
    if not cycles:
        raise UserError(f"no cycle in {Path(lake) / 'cycles'} has a committed {stage} stage "
                        "yet: run it first")
    return cycles[-1]


def fingerprint_files(paths: Iterable[Path]) -> str:
    """Fingerprint of input files by name, size and modification time (cheap at scale)."""
    h = hashlib.sha256()
    for p in sorted(Path(x) for x in paths):
        st = p.stat()
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def fingerprint_code(*paths: Path) -> str:
    """Hash of source files (a stage's module, its SQL): changed code re-runs the stage."""
    h = hashlib.sha256(__version__.encode())
    for root in paths:
        files = sorted(Path(root).rglob("*")) if Path(root).is_dir() else [Path(root)]
        for f in files:
            if f.is_file() and f.suffix in (".py", ".sql"):
                h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def read_manifest(path: Path) -> dict[str, Any] | None:
    """The manifest of a committed stage, or None when the stage is absent or incomplete."""
    f = Path(path) / MANIFEST
    if not f.is_file():
        return None
    try:
        return json.loads(f.read_text())
    except json.JSONDecodeError:
        return None


@dataclass
class StageRun:
    """One attempt at a stage: stage into `staging`, then `commit()`."""

    lake: Path
    cycle_id: str
    stage: str
    inputs: dict[str, Any]
    config_hash: str
    config: dict[str, Any] | None = None  # the resolved config, kept in the manifest
    started: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        self.final = stage_dir(self.lake, self.cycle_id, self.stage)
        self.staging = self.final.parent / f".{self.stage}.staging-{uuid.uuid4().hex[:8]}"

    def up_to_date(self) -> dict[str, Any] | None:
        """The existing manifest when it was made from the same inputs and config."""
        m = read_manifest(self.final)
        if m and m.get("inputs") == self.inputs and m.get("config_hash") == self.config_hash:
            return m
        return None

    def exclusive(self):
        """Hold the stage's lock for this cycle: a second concurrent run is refused."""
        return exclusive_lock(self.final.parent / f".{self.stage}.lock",
                       f"{self.stage} for cycle {self.cycle_id}")

    def begin(self) -> Path:
        """Start a fresh staging folder; leftovers of killed attempts are swept (under lock)."""
        for leftover in self.final.parent.glob(f".{self.stage}.staging-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        for old in self.final.parent.glob(f".{self.stage}.old-*"):
            if self.final.exists():
                shutil.rmtree(old, ignore_errors=True)
            else:  # killed between the two renames of commit(): the old stage comes back
                os.replace(old, self.final)
        self.staging.mkdir(parents=True, exist_ok=False)
        return self.staging

    def abandon(self, keep: bool = True) -> Path | None:
        """On failure: keep the staging folder for inspection (its path goes in the error)."""
        if not keep:
            shutil.rmtree(self.staging, ignore_errors=True)
            return None
        failed = failed_dir(self.lake, self.cycle_id, self.stage)
        shutil.rmtree(failed, ignore_errors=True)
        if self.staging.exists():
            os.replace(self.staging, failed)
        return failed

    def commit(self, outputs: dict[str, Any], extra: dict[str, Any] | None = None) -> dict:
        """Swap the staging folder into place and write the manifest last. Output paths
        relative to the stage folder are made absolute (where they are after the swap)."""
        outputs = {name: {**o, "path": _resolve(self.final, o["path"])}
                   if isinstance(o, dict) and "path" in o else o
                   for name, o in outputs.items()}
        manifest = {
            "stage": self.stage,
            "cycle_id": self.cycle_id,
            "path": str(self.final),
            "inputs": self.inputs,
            "config_hash": self.config_hash,
            "config": self.config,
            "code_version": __version__,
            "outputs": outputs,
            "started_at": datetime.fromtimestamp(self.started, UTC).isoformat(),
            "finished_at": datetime.now(UTC).isoformat(),
            "duration_s": round(time.time() - self.started, 3),
            **(extra or {}),
        }
        old = self.final.parent / f".{self.stage}.old-{uuid.uuid4().hex[:8]}"
        if self.final.exists():
            os.replace(self.final, old)
        os.replace(self.staging, self.final)
        tmp = self.final / f".{MANIFEST}.tmp"
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
        os.replace(tmp, self.final / MANIFEST)
        shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(failed_dir(self.lake, self.cycle_id, self.stage), ignore_errors=True)
        return manifest


def _resolve(final: Path, path: str) -> str:
    """An output path relative to the stage folder, made absolute; a URI stays as it is."""
    return path if "://" in path else str(Path(final) / path)


@contextlib.contextmanager
def exclusive_lock(lock_path: Path, what: str):
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"another run of {what} is in progress (lock {lock_path}); wait "
                            "for it to finish") from None
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@dataclass
class StageOutput:
    """What a stage's build step returns: its tables as {name: {"path": relative to the
    stage folder, "rows": n, ...}} and the extra fields of its manifest."""

    outputs: dict[str, dict[str, Any]]
    extra: dict[str, Any] = field(default_factory=dict)


def _skipped(existing: dict[str, Any]) -> dict[str, Any]:
    log.info("%s for cycle %s is up to date: skipped", existing["stage"], existing["cycle_id"])
    return {**existing, "skipped": True}


def run_stage(cfg: Config, cycle_id: str, stage: str, *, inputs: dict[str, Any],
              config_hash: str, build: Callable[[Path], StageOutput], force: bool = False,
              keep_failed: bool = True,
              still_valid: Callable[[dict[str, Any]], bool] | None = None) -> dict[str, Any]:
    """Run a stage the one way: take its lock; return the committed manifest when it was
    made from the same inputs and config (unless `force`); else `build(staging)` writes the
    outputs into a fresh staging folder, which is swapped in with its manifest. When
    `build` raises, the staging folder is kept as `.{stage}.failed` for inspection (or
    removed with `keep_failed=False`) and the committed stage, if any, is left as it was.
    `still_valid(manifest)` can veto a skip (e.g. the published copy has gone missing).
    Returns the manifest with `skipped`."""
    run = StageRun(cfg.lake, cycle_id, stage, inputs, config_hash, cfg.as_dict())
    with run.exclusive():
        existing = None if force else run.up_to_date()
        if existing is not None and (still_valid is None or still_valid(existing)):
            return _skipped(existing)
        staging = run.begin()
        try:
            result = build(staging)
        except BaseException:
            run.abandon(keep=keep_failed)
            raise
        manifest = run.commit(result.outputs, result.extra)
    return {**manifest, "skipped": False}


class ShardedStage:
    """A stage computed in shards, each its own Airflow task (or process), then committed
    once. Shards work in `.{stage}.shards-{key}/shard-NNNNN/`, keyed by the stage's inputs
    and config, and mark themselves done with `shard-NNNNN.json` (their counts), written
    last; a killed shard resumes from whatever its build step left in its folder.

    * A shard skips when the stage is already committed for the same inputs, or when its
      done-file exists.
    * A forced shard discards its earlier work and leaves a `.force` mark in the work
      folder: every other shard then re-runs too, and the commit replaces the committed
      stage (a forced re-run replaces the stage whole).
    * The commit moves the shards' outputs into the stage folder and sweeps every work
      folder of the stage, this one and stale ones, so none is left behind.
    """

    FORCE_MARK = ".force"

    def __init__(self, cfg: Config, cycle_id: str, stage: str, *, inputs: dict[str, Any],
                 config_hash: str, shards: int):
        self.run = StageRun(cfg.lake, cycle_id, stage, inputs, config_hash, cfg.as_dict())
        self.shards = shards
        key = hashlib.sha256(json.dumps([inputs, config_hash], sort_keys=True,
                                        default=str).encode()).hexdigest()[:8]
        self.work = self.run.final.parent / f".{stage}.shards-{key}"

    def shard_dir(self, shard: int) -> Path:
        return self.work / f"shard-{shard:05d}"

    def _done_file(self, shard: int) -> Path:
        return self.work / f"shard-{shard:05d}.json"

    def forcing(self) -> bool:
        return (self.work / self.FORCE_MARK).is_file()

    def committed(self) -> bool:
        """The stage is committed for these inputs and no forced re-run is under way."""
        return not self.forcing() and self.run.up_to_date() is not None

    def run_shard(self, shard: int, build: Callable[[Path], dict[str, Any]],
                  force: bool = False) -> dict[str, Any]:
        """Run `build(shard_dir)` for one shard unless it is done; returns its counts with
        `skipped`. `build` writes under `shard_dir` and returns JSON-able counts."""
        run = self.run
        if not 0 <= shard < self.shards:
            raise UserError(f"shard {shard} is outside 0..{self.shards - 1}")
        if not force and self.committed():
            log.info("%s for cycle %s is committed and up to date: shard %d skipped",
                     run.stage, run.cycle_id, shard)
            return {"skipped": True, "reason": "stage committed"}
        done = self._done_file(shard)
        with exclusive_lock(self.work / f".shard-{shard:05d}.lock", f"{run.stage} shard {shard}"):
            if force:
                (self.work / self.FORCE_MARK).touch()
                shutil.rmtree(self.shard_dir(shard), ignore_errors=True)
                done.unlink(missing_ok=True)
            elif done.is_file():
                log.info("%s shard %d/%d is done: skipped", run.stage, shard, self.shards)
                return {**json.loads(done.read_text()), "skipped": True}
            self.shard_dir(shard).mkdir(parents=True, exist_ok=True)
            counts = build(self.shard_dir(shard))
            tmp = done.with_suffix(".tmp")
            tmp.write_text(json.dumps(counts, default=str))
            os.replace(tmp, done)  # written last: the shard is complete
        log.info("%s shard %d/%d: %s", run.stage, shard, self.shards, counts)
        return {**counts, "skipped": False}

    def commit(self, gather: Callable[[list[Path], list[dict], Path], StageOutput],
               force: bool = False) -> dict[str, Any]:
        """After every shard ran: `gather(shard_dirs, shard_counts, staging)` moves the
        shards' outputs into the staging folder and returns the stage's outputs; then one
        manifest. Skipped (and the work folders swept) when the stage is up to date."""
        run = self.run
        with run.exclusive():
            force = force or self.forcing()
            if not force and (existing := run.up_to_date()):
                self._sweep()
                return _skipped(existing)
            missing = [s for s in range(self.shards) if not self._done_file(s).is_file()]
            if missing:
                raise UserError(f"{run.stage} for cycle {run.cycle_id}: shards {missing} have "
                                "not run")
            per_shard = [json.loads(self._done_file(s).read_text()) for s in range(self.shards)]
            staging = run.begin()
            try:
                result = gather([self.shard_dir(s) for s in range(self.shards)], per_shard,
                                staging)
            except BaseException:
                run.abandon()
                raise
            manifest = run.commit(result.outputs, {"shards": self.shards,
                                                   "per_shard": per_shard, **result.extra})
            self._sweep()
        return {**manifest, "skipped": False}

    def _sweep(self) -> None:
        for work in self.run.final.parent.glob(f".{self.run.stage}.shards-*"):
            shutil.rmtree(work, ignore_errors=True)
