"""`{model_dir}/CURRENT`: the one pointer both model families (HLLM, Creative LLM) use to
name the version cycles run with."""

from __future__ import annotations

from pathlib import Path

from jobs.errors import UserError

CURRENT = "CURRENT"


def current_dir(model_dir: Path, meta: str, what: str) -> Path | None:
    """The artifact CURRENT names (None without CURRENT); `meta` marks a complete one."""
    pointer = Path(model_dir) / CURRENT
    if not pointer.is_file():
        return None
    path = Path(model_dir) / pointer.read_text().strip()
    if not (path / meta).is_file():
        raise UserError(f"{pointer} names {path.name}, which is not a complete {what} artifact")
    return path


def point_at(model_dir: Path, artifact: Path) -> None:
    """Point CURRENT at `artifact` (atomic: readers see the old or the new name)."""
    tmp = Path(model_dir) / f".{CURRENT}.tmp"
    tmp.write_text(Path(artifact).name + "\n")
    tmp.replace(Path(model_dir) / CURRENT)
