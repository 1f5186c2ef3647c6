"""The lake: run-scoped stage folders, staged writes and `_SUCCESS` manifests.

Every stage writes under `{lake}/cycles/{cycle_id}/{stage}/`. It first writes into a
staging folder beside it, then swaps the staging folder into place and writes the
`_SUCCESS` manifest last, so a reader that sees `_SUCCESS` sees a complete stage. A stage
whose manifest records the same input fingerprint and config hash is skipped on re-run;
`force=True` replaces the stage whole.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jobs import __version__
from jobs.errors import UserError

MANIFEST = "_SUCCESS"


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

    @contextlib.contextmanager
    def exclusive(self):
        """Hold the stage's lock for this cycle: a second concurrent run is refused."""
        self.final.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.final.parent / f".{self.stage}.lock"
        with open(lock_path, "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UserError(
                    f"another run of {self.stage} for cycle {self.cycle_id} is in progress "
                    f"(lock {lock_path}); wait for it to finish") from None
            try:
                yield self
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

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
        failed = self.final.parent / f".{self.stage}.failed"
        shutil.rmtree(failed, ignore_errors=True)
        if self.staging.exists():
            os.replace(self.staging, failed)
        return failed

    def commit(self, outputs: dict[str, Any], extra: dict[str, Any] | None = None) -> dict:
        """Swap the staging folder into place and write the manifest last."""
        manifest = {
            "stage": self.stage,
            "cycle_id": self.cycle_id,
            "path": str(self.final),
            "inputs": self.inputs,
            "config_hash": self.config_hash,
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
        shutil.rmtree(self.final.parent / f".{self.stage}.failed", ignore_errors=True)
        return manifest
