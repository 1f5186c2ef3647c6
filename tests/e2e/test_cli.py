"""The console command: --help everywhere, one-line errors with exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jobs.entrypoints.cli import app

CLI = str(Path(sys.executable).with_name("creative-factory"))
runner = CliRunner()


def commands():
    import typer.main

    group = typer.main.get_command(app)
    return sorted(group.commands)


def test_the_expected_commands_exist():
    assert {"sample-data", "extract-features", "run-cycle", "show-config"} <= set(commands())


@pytest.mark.parametrize("name", commands())
def test_every_subcommand_has_help(name):
    result = runner.invoke(app, [name, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output and "--help" in result.output


def test_installed_console_script_runs():
    proc = subprocess.run([CLI, "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "sample-data" in proc.stdout


def test_sample_data_command(tmp_path):
    result = runner.invoke(app, ["sample-data", "--out", str(tmp_path / "s"), "--users", "20",
                                 "--ads", "15", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert "15 ads, 20 users" in result.output
    assert list((tmp_path / "s" / "clicks").glob("*.parquet"))


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    proc = subprocess.run(
        [CLI, "extract-features", "--cycle-id", "20261101T000000Z",
         "--set", f"inputs.ads={tmp_path / 'missing'}"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: input folder for raw ads not found")
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1

    result = runner.invoke(app, ["show-config", "--set", "features.max_history=zero"])
    assert result.exit_code == 2
    assert "features.max_history" in result.output

    result = runner.invoke(app, ["extract-features", "--cycle-id", "yesterday"])
    assert result.exit_code == 2 and "YYYYMMDDTHHMMSSZ" in result.output
