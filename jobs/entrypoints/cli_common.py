"""What every `creative-factory` command shares: its options and its error handling."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Annotated

import typer

from jobs.platform.errors import UserError

ConfigOpt = Annotated[Path | None, typer.Option(
    "--config", help="Overlay config file on top of creative-factory.yaml (partial is fine).")]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", help="Override one setting, e.g. --set features.max_history=200. Repeatable.")]
CycleOpt = Annotated[str, typer.Option(
    "--cycle-id", help="Cycle id, YYYYMMDDTHHMMSSZ (data interval end).")]
ForceOpt = Annotated[bool, typer.Option(help="Re-run even when the stage is up to date.")]


def log_to_console() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")


def friendly(fn):
    """UserError -> one line on stderr and exit code 2; anything else is a bug."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None

    return wrapper
