"""`creative-factory`: the command line for operators and on-call.

Every subcommand takes `--config FILE` and repeated `--set section.key=value` overrides
(see creative-factory.yaml). Bad input and bad config print one line and exit 2.

Each command imports the stage or trainer it runs inside its function, so that
`creative-factory --help` and the light commands start without loading torch, Spark or
vLLM.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from jobs.entrypoints.cli_common import (
    ConfigOpt,
    CycleOpt,
    ForceOpt,
    SetOpt,
    friendly,
    log_to_console,
)
from jobs.entrypoints.library_cli import library_app
from jobs.platform.config import load_config
from jobs.platform.errors import UserError

app = typer.Typer(
    name="creative-factory",
    help="Offline factory for personalized ad creatives (HLLM-Creator method).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

@app.command("sample-data")
@friendly
def sample_data(
    out: Annotated[Path, typer.Option(help="Folder to write ads/ and clicks/ into.")],
    users: Annotated[int, typer.Option(min=1, help="Number of users.")] = 2000,
    ads: Annotated[int, typer.Option(min=1, help="Number of ads.")] = 500,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same files.")] = 7,
    events_per_user: Annotated[float, typer.Option(min=1, help="Mean events per user.")] = 40,
    end: Annotated[str, typer.Option(help="Clicks fall in the 90 days before this instant.")]
    = "2026-11-01T00:00:00Z",
    format: Annotated[str, typer.Option(help="parquet or jsonl.")] = "parquet",
    force: Annotated[bool, typer.Option(help="Rewrite even when `out` holds this sample.")]
    = False,
) -> None:
    """Write synthetic raw `ads` and `clicks` tables (deterministic per seed, streamed)."""
    from jobs.sample.sample_data import SampleSpec, generate

    spec = SampleSpec(users=users, ads=ads, seed=seed, events_per_user=events_per_user,
                      end=end, format=format)
    manifest = generate(spec, out, force=force)
    typer.echo(f"{out}: {manifest['ads']:,} ads, {manifest['users']:,} users, "
               f"{manifest['events']:,} events ({format})")


@app.command("extract-features")
@friendly
def extract_features(
    cycle_id: CycleOpt,
    force: ForceOpt = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Stage 1: raw ads and clicks -> validated feature tables and quarantine (PySpark)."""
    from jobs.stages import extract_features as stage

    log_to_console()
    cfg = load_config(config, set_)
    manifest = stage.run(cfg, cycle_id, force=force)
    state = "skipped (up to date)" if manifest["skipped"] else "done"
    typer.echo(f"extract_features {state}: {manifest['path']}")
    for name, out in manifest["outputs"].items():
        typer.echo(f"  {name:<16} {out['rows']:>10,} rows")


@app.command("embed-items")
@friendly
def embed_items_cmd(
    cycle_id: CycleOpt,
    force: ForceOpt = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Stage 2: Item LLM embeddings of the cycle's items (cached per model and text)."""
    from jobs.stages import embed_items

    log_to_console()
    m = embed_items.run(load_config(config, set_), cycle_id, force=force)
    typer.echo(f"embed_items {'skipped (up to date)' if m['skipped'] else 'done'}: {m['path']} "
               f"({m['outputs']['item_embeddings']['rows']:,} items, {m['from_cache']:,} from "
               f"cache, {m['embedded']:,} embedded, {m['outputs']['rejected']['rows']:,} rejected)")


@app.command("embed-users")
@friendly
def embed_users_cmd(
    cycle_id: CycleOpt,
    shard: Annotated[int | None, typer.Option(help="Run one shard only (no commit).")] = None,
    force: Annotated[bool, typer.Option(
        help="Re-run every shard and replace the committed stage.")] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Stage 3: User LLM embeddings of every user, in shards, then one commit."""
    from jobs.stages import embed_users

    log_to_console()
    cfg = load_config(config, set_)
    if shard is not None:
        counts = embed_users.run_shard(cfg, cycle_id, shard, force=force)
        typer.echo(f"embed_users shard {shard}: {counts}")
        return
    m = embed_users.run(cfg, cycle_id, force=force)
    typer.echo(f"embed_users {'skipped (up to date)' if m['skipped'] else 'done'}: {m['path']} "
               f"{m['counts']}")


@app.command("cluster-users")
@friendly
def cluster_users_cmd(
    cycle_id: CycleOpt,
    force: ForceOpt = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Stage 4: k-means user clusters with stable ids, privacy floor, assignments."""
    from jobs.stages import cluster_users

    log_to_console()
    m = cluster_users.run(load_config(config, set_), cycle_id, force=force)
    s = m["summary"]
    typer.echo(f"cluster_users {'skipped (up to date)' if m['skipped'] else 'done'}: {m['path']}\n"
               f"  {s['users']:,} users in {s['k_active']} clusters (sizes {s['size_min']}.."
               f"{s['size_max']}), centroids {m['centroid_version']}, refit: "
               f"{s['refit_reason'] or 'no'}, merged for the privacy floor: "
               f"{len(s['merged_into'])}")


@app.command("match-ads")
@friendly
def match_ads_cmd(
    cycle_id: CycleOpt,
    force: ForceOpt = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Stage 5: the Item-User Predictor picks each ad's clusters -> generation requests."""
    from jobs.stages import match_ads

    log_to_console()
    m = match_ads.run(load_config(config, set_), cycle_id, force=force)
    s = m["summary"]
    typer.echo(f"match_ads {'skipped (up to date)' if m['skipped'] else 'done'}: {m['path']}\n"
               f"  {s['requests']:,} requests {s['requests_by_strategy']} for {s['ads_matched']:,} "
               f"ads ({s['ads_skipped']} skipped), {s['work_saved_ratio']}x fewer than one per "
               f"(user, ad); issues {s['ad_issues']}")


@app.command("report")
@friendly
def report_cmd(
    cycle_id: CycleOpt,
    force: ForceOpt = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Stage 9: the cycle report (HTML with plots, Markdown summary) from every manifest."""
    from jobs.stages import report

    log_to_console()
    m = report.run(load_config(config, set_), cycle_id, force=force)
    typer.echo(f"report {'skipped (up to date)' if m['skipped'] else 'done'}: "
               f"{m['outputs']['report_html']['path']}")
    for k, v in m["headline"].items():
        typer.echo(f"  {k}: {v}")


train_app = typer.Typer(help="Train models.", no_args_is_help=True)
eval_app = typer.Typer(help="Evaluate models.", no_args_is_help=True)
app.add_typer(train_app, name="train")
app.add_typer(eval_app, name="eval")


@train_app.command("hllm")
@friendly
def train_hllm_cmd(
    cycle_id: Annotated[str, typer.Option(help="Train on this cycle's extract_features output.")],
    out: Annotated[Path | None, typer.Option(help="Artifact directory (default: by version).")]
    = None,
    resume: Annotated[bool, typer.Option(help="Resume a killed run from its checkpoint.")]
    = True,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Train the User LLM and the Item-User Predictor (Item LLM frozen by default)."""
    from jobs.evaluation.eval_hllm import train_and_evaluate

    log_to_console()
    path = train_and_evaluate(load_config(config, set_), cycle_id, out_dir=out, resume=resume)
    metrics = json.loads((path / "hllm.json").read_text())["metrics"]
    typer.echo(f"HLLM artifact: {path}\n{json.dumps(metrics, indent=2)}")


@eval_app.command("hllm")
@friendly
def eval_hllm_cmd(
    cycle_id: Annotated[str, typer.Option(help="Evaluate on this cycle's features.")],
    model: Annotated[Path | None, typer.Option(help="HLLM artifact (default: CURRENT).")]
    = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Recall@10 / NDCG@10 on a last-click hold-out vs popularity and item-kNN; AUC."""
    from jobs.evaluation.eval_hllm import evaluate_artifact
    from jobs.platform.registry import HLLM, require_artifact

    cfg = load_config(config, set_)
    artifact = model or require_artifact(cfg, HLLM)
    metrics = evaluate_artifact(cfg, artifact, cycle_id)
    typer.echo(json.dumps({"model": str(artifact), **metrics}, indent=2))


@app.command("build-dataset")
@friendly
def build_dataset_cmd(
    cycle_id: CycleOpt,
    force: ForceOpt = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Creative LLM training data: profile -> interest-driven title -> hallucination filter."""
    from jobs.training import build_dataset

    log_to_console()
    m = build_dataset.run(load_config(config, set_), cycle_id, force=force)
    typer.echo(f"build_dataset {'skipped (up to date)' if m['skipped'] else 'done'}: "
               f"{m['path']}\n{json.dumps(m['counts'], indent=2)}")


@train_app.command("creator")
@friendly
def train_creator_cmd(
    cycle_id: Annotated[str, typer.Option(help="Train on this cycle's build_dataset output.")],
    out: Annotated[Path | None, typer.Option(help="Artifact directory (default: by version).")]
    = None,
    resume: Annotated[bool, typer.Option(help="Resume a killed run from its checkpoint.")]
    = True,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Train the Creative LLM (gen + cls + align + recon losses); evaluates it after."""
    from jobs.evaluation.eval_creator import train_and_evaluate

    log_to_console()
    path = train_and_evaluate(load_config(config, set_), cycle_id, out_dir=out, resume=resume)
    metrics = json.loads((path / "creator.json").read_text()).get("metrics")
    typer.echo(f"Creative LLM artifact: {path}\n{json.dumps(metrics, indent=2)}")


@eval_app.command("creator")
@friendly
def eval_creator_cmd(
    cycle_id: Annotated[str, typer.Option(help="Evaluate on this cycle's held-out users.")],
    model: Annotated[Path | None, typer.Option(help="Creative LLM artifact (default: CURRENT).")]
    = None,
    backend: Annotated[str | None, typer.Option(
        help="Generation engine: vllm or hf (default: creator.eval.backend).")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Grounding pass rate, personalization GSB, distinct-n across clusters (+ LLM judge)."""
    from jobs.evaluation.eval_creator import evaluate_artifact
    from jobs.platform.registry import CREATOR, require_artifact

    if backend not in (None, "hf", "vllm"):
        raise UserError(f"--backend must be hf or vllm, got {backend!r}")
    cfg = load_config(config, set_)
    artifact = model or require_artifact(cfg, CREATOR)
    metrics = evaluate_artifact(cfg, artifact, cycle_id, backend=backend)
    typer.echo(json.dumps({"model": str(artifact), **metrics}, indent=2))


@app.command("generate")
@friendly
def generate_cmd(
    cycle_id: CycleOpt,
    shard: Annotated[int | None, typer.Option(help="Run one shard only (no commit).")] = None,
    force: Annotated[bool, typer.Option(
        help="Regenerate every request (no reuse) and replace the committed stage.")] = False,
    as_json: Annotated[bool, typer.Option(
        "--json", help="With --shard: print the shard's result as one JSON line.")] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Stage 6: a title per generation request (vLLM or HF), in shards, then one commit."""
    from jobs.stages import generate

    log_to_console()
    cfg = load_config(config, set_)
    if shard is not None:
        counts = generate.run_shard(cfg, cycle_id, shard, force=force)
        typer.echo(json.dumps(counts) if as_json else f"generate shard {shard}: "
                   f"{json.dumps(counts)}")
        return
    m = generate.run(cfg, cycle_id, force=force)
    typer.echo(f"generate {'skipped (up to date)' if m['skipped'] else 'done'}: {m['path']}\n"
               f"{json.dumps(m['counts'], indent=2)}")


@app.command("kill-badcases")
@friendly
def kill_badcases_cmd(
    cycle_id: CycleOpt,
    force: ForceOpt = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Stage 7: the Badcase Killer's rules over the generations -> verdicts and passing."""
    from jobs.stages import kill_badcases

    log_to_console()
    m = kill_badcases.run(load_config(config, set_), cycle_id, force=force)
    c = m["counts"]
    typer.echo(f"kill_badcases {'skipped (up to date)' if m['skipped'] else 'done'}: "
               f"{m['path']}\n  {c['passed']:,} of {c['generations']:,} passed, "
               f"{c['killed']:,} killed; by reason {m['kills_by_reason']}")


@app.command("publish-library")
@friendly
def publish_library_cmd(
    cycle_id: CycleOpt,
    force: ForceOpt = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Stage 8: gate the passing variants and publish them as library version CYCLE_ID."""
    from jobs.stages import publish_library

    log_to_console()
    m = publish_library.run(load_config(config, set_), cycle_id, force=force)
    up = m["upload"]
    typer.echo(f"publish_library {'skipped (up to date)' if m['skipped'] else 'done'}: "
               f"{m['outputs']['library']['path']} ({m['outputs']['library']['rows']:,} "
               f"variants, {m['objects']} objects: {up['uploaded']} uploaded, {up['same']} "
               f"unchanged); LATEST {m['latest_before']} -> {m['latest_after']}")


@eval_app.command("badcase")
@friendly
def eval_badcase_cmd(
    labeled: Annotated[Path | None, typer.Option(
        help="Labeled titles (JSONL; default badcase.labeled_set).")] = None,
    split: Annotated[str, typer.Option(
        help="all | dev (rules are developed on it) | test (held out: read its summary, "
             "not its disagreements).")] = "all",
    summary: Annotated[bool, typer.Option(
        help="Measures only, no disagreements.")] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """The Badcase Killer on a labeled set: precision and recall per rule family, false
    kills, and every title where label and verdict disagree."""
    from jobs.stages.kill_badcases import evaluate_labeled, format_eval

    cfg = load_config(config, set_)
    typer.echo(format_eval(evaluate_labeled(cfg, labeled or cfg.badcase.labeled_set),
                           split, disagreements=not summary))


app.add_typer(library_app, name="library")


@app.command("run-cycle")
@friendly
def run_cycle(
    logical_date: Annotated[str | None, typer.Option(
        help="ISO instant of the data interval end (default: the latest 5-hour boundary).")]
    = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Run one cycle of creative_factory_cycle through Airflow (`make run` calls this)."""
    from jobs.entrypoints.run_cycle import run

    cfg = load_config(config, set_)
    when = None
    if logical_date:
        try:
            when = datetime.fromisoformat(logical_date.replace("Z", "+00:00"))
        except ValueError:
            raise UserError(f"--logical-date {logical_date!r} is not an ISO 8601 instant") from None
        if when.tzinfo is None:
            raise UserError("--logical-date needs a timezone, e.g. 2026-11-21T20:00:00Z")
    raise typer.Exit(run(cfg, set_ or [], str(config) if config else None, when))


@app.command("airflow")
@friendly
def airflow_standalone(
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port of the Airflow UI.")] = 8080,
    gpu_slots: Annotated[int, typer.Option(min=1, help="Slots of the `gpu` pool.")] = 1,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Start a local Airflow (`airflow standalone`) with these DAGs (`make airflow` calls this).

    Same Airflow home as `run-cycle` (airflow.home, SQLite metadata, examples off), so the UI
    shows the runs of `make run`. The login and its generated password are printed by Airflow
    at start-up. Ctrl-C stops it.
    """
    import os
    import subprocess

    from jobs.entrypoints.run_cycle import airflow_env, ensure_sample_data

    cfg = load_config(config, set_)
    ensure_sample_data(cfg)
    env = airflow_env(cfg, set_ or [], str(config) if config else None)
    env["AIRFLOW__API__PORT"] = str(port)
    exe = str(Path(sys.executable).with_name("airflow"))
    # standalone starts its components as `airflow ...` from PATH: this environment's first
    env["PATH"] = os.pathsep.join([str(Path(exe).parent), env.get("PATH", "")])
    for args in (["db", "migrate"],
                 ["pools", "set", "gpu", str(gpu_slots), "GPU-bound tasks: embeddings, generation"]):
        if subprocess.run([exe, *args], env=env, stdout=subprocess.DEVNULL).returncode != 0:
            raise UserError(f"`airflow {' '.join(args)}` failed (AIRFLOW_HOME={env['AIRFLOW_HOME']})")
    typer.echo(f"Airflow standalone: http://localhost:{port}  (AIRFLOW_HOME={env['AIRFLOW_HOME']}, "
               f"DAGs from {env['AIRFLOW__CORE__DAGS_FOLDER']})")
    os.execve(exe, [exe, "standalone"], env)


@app.command("show-config")
@friendly
def show_config(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Print the resolved config (after file, environment and --set overrides)."""
    cfg = load_config(config, set_)
    typer.echo(json.dumps(cfg.as_dict(), indent=2))


def main() -> None:  # pragma: no cover
    app(prog_name="creative-factory")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
