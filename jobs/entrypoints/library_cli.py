"""`creative-factory library ...`: look at, compare and roll back creative library versions.

Every command opens the configured library (`library.endpoint_url`, or the embedded S3
server over `library.embedded_dir`, started for the command and stopped after it).
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from botocore.exceptions import ClientError

from jobs.entrypoints.cli_common import ConfigOpt, SetOpt, friendly
from jobs.platform.config import load_config
from jobs.platform.errors import UserError
from jobs.platform.library import diff, lookup, rollback, show, versions_summary
from jobs.platform.s3 import open_store

library_app = typer.Typer(help="The versioned creative library on S3: versions, show, diff, "
                          "rollback.", no_args_is_help=True)

def _store(config, set_):
    cfg = load_config(config, set_)
    return cfg, open_store(cfg.library, create_bucket=False)


def _no_bucket(store, exc) -> None:
    if isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") in (
            "NoSuchBucket", "404"):
        raise UserError(f"library bucket {store.bucket} does not exist at "
                        f"{store.endpoint_url or 'AWS'}: nothing published yet") from None
    raise exc


@library_app.command("versions")
@friendly
def versions_cmd(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Every version, oldest first: complete or not, LATEST, counts and Creative LLM."""

    _, opened = _store(config, set_)
    with opened as store:
        try:
            rows = versions_summary(store)
        except Exception as exc:  # noqa: BLE001
            _no_bucket(store, exc)
        typer.echo(f"library {store.uri()} ({store.endpoint_url or 'aws'})")
        if not rows:
            typer.echo("  no versions")
        for r in rows:
            mark = "LATEST" if r["latest"] else ""
            if r["complete"]:
                typer.echo(f"  {r['version']}  {r['variants']:>10,} variants  "
                           f"{r['ads']:>8,} ads  {r['advertisers']:>6,} advertisers  "
                           f"creator {r['creator']}  {mark}")
            else:
                typer.echo(f"  {r['version']}  incomplete (no manifest.json: not served)"
                           f"  {mark}")


@library_app.command("show")
@friendly
def show_cmd(
    ad: Annotated[str, typer.Option("--ad", help="Ad id.")],
    cluster: Annotated[int | None, typer.Option("--cluster", help="Only this cluster.")] = None,
    version: Annotated[str | None, typer.Option(help="Version (default LATEST).")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """The variants of one ad (optionally one cluster) in a version, as JSON lines."""

    _, opened = _store(config, set_)
    with opened as store:
        try:
            v, rows = show(store, ad, cluster, version)
        except Exception as exc:  # noqa: BLE001
            _no_bucket(store, exc)
    typer.echo(f"version {v}: {len(rows)} variants of ad {ad}"
               + (f" in cluster {cluster}" if cluster is not None else ""))
    for r in rows:
        typer.echo(json.dumps(r, ensure_ascii=False))


@library_app.command("diff")
@friendly
def diff_cmd(
    v1: Annotated[str, typer.Argument(help="Old version.")],
    v2: Annotated[str, typer.Argument(help="New version.")],
    full: Annotated[bool, typer.Option(help="Print every variant, not only counts.")] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Added, removed and changed variants per advertiser between two versions."""

    _, opened = _store(config, set_)
    with opened as store:
        try:
            d = diff(store, v1, v2)
        except Exception as exc:  # noqa: BLE001
            _no_bucket(store, exc)
    t = d["totals"]
    typer.echo(f"{v1} -> {v2}: {t['added']:,} added, {t['removed']:,} removed, "
               f"{t['changed']:,} changed, {d['unchanged']:,} unchanged")
    typer.echo(f"  {'advertiser':<24} {'added':>8} {'removed':>8} {'changed':>8}")
    for adv, parts in d["advertisers"].items():
        typer.echo(f"  {adv:<24} {len(parts['added']):>8} {len(parts['removed']):>8} "
                   f"{len(parts['changed']):>8}")
        if full:
            for kind in ("added", "removed", "changed"):
                for r in parts[kind]:
                    typer.echo(f"    {kind}: " + json.dumps(r, ensure_ascii=False))


@library_app.command("rollback")
@friendly
def rollback_cmd(
    version: Annotated[str, typer.Argument(help="Version to serve again.")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Point LATEST at an older complete version (its objects are checked first)."""

    _, opened = _store(config, set_)
    with opened as store:
        try:
            before = rollback(store, version)
        except Exception as exc:  # noqa: BLE001
            _no_bucket(store, exc)
        typer.echo(f"LATEST {before} -> {version} ({store.uri('LATEST')})")


@library_app.command("lookup")
@friendly
def lookup_cmd(
    ad: Annotated[str, typer.Option("--ad", help="Ad id.")],
    user: Annotated[str, typer.Option("--user", help="User id (mapped to its cluster).")],
    query: Annotated[str | None, typer.Option(help="The user's search query, if any.")] = None,
    version: Annotated[str | None, typer.Option(help="Version (default LATEST).")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """What serving shows: the user's cluster's variant of the ad, or its original title."""
    from dataclasses import asdict


    cfg = load_config(config, set_)
    typer.echo(json.dumps(asdict(lookup(cfg, ad, user, query, version)), ensure_ascii=False))
