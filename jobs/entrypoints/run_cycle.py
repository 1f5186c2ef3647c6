"""`make run`: one cycle of `creative_factory_cycle` through real Airflow, on one machine.

Makes the sample data on first use, prepares an Airflow home with SQLite metadata under
`var/airflow`, runs `airflow dags test` for the cycle of the latest five-hour boundary
(so a second `make run` in the same window re-runs the same cycle, and its stages are
skipped), then prints where every stage wrote and the headline counts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from jobs.platform.config import REPO_ROOT, Config
from jobs.platform.errors import UserError
from jobs.platform.lake import cycle_id_for, read_manifest
from jobs.sample.sample_data import SampleSpec, generate
from jobs.stages.report import stage_seconds

DAG_ID = "creative_factory_cycle"
CYCLE_HOURS = 5
STAGES = ["extract_features", "embed_items", "embed_users", "cluster_users", "match_ads",
          "generate", "kill_badcases", "report", "publish_library"]
GPU_POOL_SLOTS = 1  # one GPU-bound task at a time on this machine


def latest_boundary(now: datetime | None = None) -> datetime:
    """The most recent five-hour boundary (UTC, counted from the Unix epoch)."""
    now = now or datetime.now(UTC)
    step = CYCLE_HOURS * 3600
    return datetime.fromtimestamp(int(now.timestamp()) // step * step, UTC)


def airflow_env(cfg: Config, overrides: list[str], config_path: str | None) -> dict[str, str]:
    home = cfg.airflow.home
    home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "120",
        "GX_ANALYTICS_ENABLED": "false",
        "PYTHONUNBUFFERED": "1",
    })
    if config_path:
        env["CREATIVE_FACTORY_CONFIG"] = str(Path(config_path).resolve())
    for item in overrides:
        key, value = item.split("=", 1)
        env["CF__" + key.strip().upper().replace(".", "__")] = value
    return env


def ensure_sample_data(cfg: Config) -> None:
    ads, clicks = cfg.inputs.ads, cfg.inputs.clicks
    if ads.is_dir() and clicks.is_dir():
        return
    if ads.parent != clicks.parent or ads.name != "ads" or clicks.name != "clicks":
        raise UserError(f"input folders {ads} and {clicks} are missing; "
                        "make them, or point inputs.* at existing folders")
    s = cfg.sample
    print(f"making sample data: {s.users:,} users, {s.ads:,} ads -> {ads.parent}")
    generate(SampleSpec(users=s.users, ads=s.ads, seed=s.seed,
                        events_per_user=s.events_per_user, end=s.end, format=s.format),
             ads.parent)


def _airflow(args: list[str], env: dict[str, str], log_file: Path,
             errors: list[str] | None = None) -> int:
    exe = Path(sys.executable).with_name("airflow")
    with open(log_file, "a") as log:
        log.write(f"\n$ airflow {' '.join(args)}\n")
        log.flush()
        proc = subprocess.Popen([str(exe), *args], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, cwd=REPO_ROOT)
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            if _worth_showing(line):
                print("  " + line.rstrip()[:400])
            if errors is not None and "AirflowFailException:" in line:
                errors.append(line.split("AirflowFailException:", 1)[1].strip())
        return proc.wait()


def _worth_showing(line: str) -> bool:
    """The few Airflow log lines a person running `make run` wants to see live."""
    keys = ("[jobs.", "failed validation", "AirflowFailException", "DagRun Finished", "[error")
    return any(k in line for k in keys)


def _print_where(cfg: Config, cycle_id: str) -> None:
    """Where the library version and the report are, and the headline counts."""
    cycle = cfg.lake / "cycles" / cycle_id
    report = read_manifest(cycle / "report")
    publish = read_manifest(cycle / "publish_library")
    if report:
        print(f"\nreport:  {report['outputs']['report_html']['path']}")
        for k, v in report.get("headline", {}).items():
            print(f"  {k}: {v}")
    if publish:
        print(f"library: {publish['outputs']['library']['path']} "
              f"({publish['outputs']['library']['rows']:,} variants; "
              f"LATEST -> {publish['latest_after']})")
        if cfg.library.endpoint_url is None:
            print(f"         embedded S3 files: {cfg.library.embedded_dir / cfg.library.bucket}; "
                  "browse with `creative-factory library versions`")


def run(cfg: Config, overrides: list[str], config_path: str | None,
        logical_date: datetime | None = None) -> int:
    ensure_sample_data(cfg)
    logical_date = logical_date or latest_boundary()
    cycle_id = cycle_id_for(logical_date)
    env = airflow_env(cfg, overrides, config_path)
    log_dir = cfg.lake / "cycles" / cycle_id
    log_dir.mkdir(parents=True, exist_ok=True)
    log_file = log_dir / "airflow-dags-test.log"
    started = time.time()
    print(f"cycle {cycle_id}: airflow dags test {DAG_ID} (full log: {log_file})")
    if _airflow(["db", "migrate"], env, log_file) != 0:
        raise UserError(f"`airflow db migrate` failed; see {log_file}")
    if _airflow(["pools", "set", "gpu", str(GPU_POOL_SLOTS), "embedding and generation tasks"],
                env, log_file) != 0:
        raise UserError(f"`airflow pools set gpu` failed; see {log_file}")
    errors: list[str] = []
    rc = _airflow(["dags", "test", DAG_ID, logical_date.isoformat()], env, log_file, errors)
    elapsed = time.time() - started

    print(f"\ncycle {cycle_id} finished in {elapsed:.0f}s; outputs:")
    ok = rc == 0
    for stage in STAGES:
        m = read_manifest(cfg.lake / "cycles" / cycle_id / stage)
        if m is None:
            ok = False
            print(f"  {stage:<18} FAILED or not run - see {log_file}")
            continue
        fresh = datetime.fromisoformat(m["finished_at"]).timestamp() >= started
        if fresh:
            state = f"ran in {stage_seconds(m):.0f}s"
        elif rc == 0:
            state = "up to date, skipped"
        else:
            ok = False
            state = "NOT refreshed: this run failed; showing the last committed output"
        print(f"  {stage:<18} {m['path']}  ({state})")
        for name, out in m["outputs"].items():
            if out.get("rows") is not None:
                print(f"      {name:<20} {out['rows']:>10,} rows")
        if stage == "extract_features" and "reconciliation" in m:
            rec = {t: {k: c[k] for k in ("rows_in", "accepted", "quarantined")}
                   for t, c in m["reconciliation"].items()}
            print(f"      reconciliation   {json.dumps(rec)}")
    _print_where(cfg, cycle_id)
    for message in errors:
        print(f"\nerror: {message}")
    return 0 if ok else 1

