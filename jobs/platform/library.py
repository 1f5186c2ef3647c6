"""Reading the creative library: versions, show, diff, rollback, and the serving lookup.

Readers resolve `LATEST` and trust a version only when its `manifest.json` exists (it is
written after the data; see `jobs/stages/publish_library.py`); `creatives.parquet` is checked
against the manifest's sha256 before use. `rollback(store, version)` points LATEST at an
older complete version after checking its objects are all there.

Serving: `ServingIndex` answers (ad_id, user_id[, query]) -> the title to show: the user's
cluster comes from cluster_users' `assignments` (which stay in the lake: the library holds
no user ids), then that cluster's variant for the ad (the query-aware one when the query
matches, else the query-free one), else the ad's original title.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from jobs.platform.errors import UserError
from jobs.platform.lake import read_manifest, stage_dir
from jobs.platform.s3 import open_store

log = logging.getLogger(__name__)
VERSION_RE = re.compile(r"\d{8}T\d{6}Z")


def read_latest(store) -> str | None:
    """The version LATEST names, or None when nothing was published yet."""
    body = store.get_bytes(store.key("LATEST"))
    if body is None:
        return None
    version = body.decode("utf-8", errors="replace").strip()
    if not VERSION_RE.fullmatch(version):
        raise UserError(f"{store.uri('LATEST')} holds {version[:40]!r}, not a version id; "
                        "point it at a version with `creative-factory library rollback`")
    return version


def remote_manifest(store, version: str) -> dict | None:
    body = store.get_bytes(store.key("versions", version, "manifest.json"))
    return None if body is None else json.loads(body)


def list_versions(store) -> list[dict[str, Any]]:
    """Every version folder, oldest first: complete (has a manifest) or not, and LATEST."""
    latest = read_latest(store)
    out = []
    for v in sorted(store.list_dirs(store.key("versions") + "/")):
        if not VERSION_RE.fullmatch(v):
            continue
        complete = store.head(store.key("versions", v, "manifest.json")) is not None
        out.append({"version": v, "complete": complete, "latest": v == latest})
    return out


def resolve(store, version: str | None = None) -> tuple[str, dict]:
    """(version, manifest): the given version or LATEST; only complete versions."""
    if version is None:
        version = read_latest(store)
        if version is None:
            raise UserError(f"nothing published yet: {store.uri('LATEST')} does not exist")
    if not VERSION_RE.fullmatch(version):
        raise UserError(f"{version!r} is not a library version id (YYYYMMDDTHHMMSSZ)")
    manifest = remote_manifest(store, version)
    if manifest is None:
        raise UserError(f"library version {version} is not complete (no "
                        f"{store.uri('versions', version, 'manifest.json')}); see "
                        "`creative-factory library versions`")
    return version, manifest


def load_variants(store, version: str | None = None) -> tuple[str, pa.Table]:
    """(version, variants) of a complete version, checked against its manifest."""
    version, manifest = resolve(store, version)
    key = store.key("versions", version, "creatives.parquet")
    body = store.get_bytes(key)
    want = manifest["objects"]["creatives.parquet"]["sha256"]
    if body is None or hashlib.sha256(body).hexdigest() != want:
        raise UserError(f"{store.uri('versions', version, 'creatives.parquet')} is missing or "
                        "does not match its manifest checksum; roll back to another version")
    return version, pq.read_table(io.BytesIO(body))


def versions_summary(store) -> list[dict[str, Any]]:
    """`library versions`: every version with its counts and model versions."""
    out = []
    for v in list_versions(store):
        row = dict(v)
        if v["complete"]:
            m = remote_manifest(store, v["version"]) or {}
            c = m.get("counts", {})
            row.update(variants=c.get("variants"), ads=c.get("ads"),
                       advertisers=c.get("advertisers"),
                       creator=",".join(m.get("model_versions", {}).get("creator", [])))
        out.append(row)
    return out


def show(store, ad_id: str, cluster_id: int | None = None,
         version: str | None = None) -> tuple[str, list[dict]]:
    """Variants of one ad (optionally one cluster) in a version (default LATEST)."""
    import pyarrow.compute as pc

    version, table = load_variants(store, version)
    mask = pc.equal(table.column("ad_id"), ad_id)
    if cluster_id is not None:
        mask = pc.and_(mask, pc.equal(table.column("cluster_id"), cluster_id))
    return version, table.filter(mask).to_pylist()


def _key(row: dict) -> tuple:
    return (row["ad_id"], row["cluster_id"], row["strategy"], row["query"] or "")


def diff(store, v1: str, v2: str) -> dict[str, Any]:
    """Added / removed / changed variants per advertiser from version v1 to v2."""
    _, a = load_variants(store, v1)
    _, b = load_variants(store, v2)
    old = {_key(r): r for r in a.to_pylist()}
    new = {_key(r): r for r in b.to_pylist()}
    per_adv: dict[str, dict[str, list]] = {}

    def bucket(adv: str) -> dict[str, list]:
        return per_adv.setdefault(adv, {"added": [], "removed": [], "changed": []})

    for k in sorted(new.keys() - old.keys()):
        bucket(new[k]["advertiser_id"])["added"].append(new[k])
    for k in sorted(old.keys() - new.keys()):
        bucket(old[k]["advertiser_id"])["removed"].append(old[k])
    for k in sorted(old.keys() & new.keys()):
        if old[k]["title"] != new[k]["title"]:
            bucket(new[k]["advertiser_id"])["changed"].append(
                {**new[k], "old_title": old[k]["title"]})
    totals = {s: sum(len(d[s]) for d in per_adv.values()) for s in ("added", "removed",
                                                                     "changed")}
    return {"from": v1, "to": v2, "totals": totals,
            "unchanged": len(old.keys() & new.keys()) - totals["changed"],
            "advertisers": dict(sorted(per_adv.items()))}


def rollback(store, version: str) -> str | None:
    """Point LATEST at `version` (complete, every object present); returns the old LATEST."""
    version, manifest = resolve(store, version)
    vkey = store.key("versions", version)
    listed = {o["Key"][len(vkey) + 1:]: o["Size"] for o in store.list_keys(vkey + "/")}
    broken = [rel for rel, c in manifest["objects"].items() if listed.get(rel) != c["bytes"]]
    if broken:
        raise UserError(f"version {version} is damaged ({len(broken)} objects missing or of "
                        f"the wrong size, e.g. {broken[:3]}): not rolling back to it")
    before = read_latest(store)
    store.put_bytes(store.key("LATEST"), version.encode(), "text/plain")
    log.info("library: LATEST %s -> %s", before, version)
    return before


@dataclass(frozen=True)
class Creative:
    """What serving shows for (ad, user): a variant of the user's cluster or the original."""

    ad_id: str
    title: str | None
    source: str  # "variant" | "original" | "unknown_ad"
    cluster_id: int | None = None
    strategy: str | None = None
    version: str | None = None


class ServingIndex:
    """(ad_id, user_id[, query]) -> title, from one library version and the assignments."""

    def __init__(self, variants: pa.Table, assignments: pa.Table,
                 original_titles: dict[str, str] | None = None, version: str | None = None):
        self.version = version
        users = assignments.column("user_id").to_pylist()
        clusters = assignments.column("cluster_id").to_pylist()
        self.cluster_of: dict[str, int] = dict(zip(users, clusters, strict=True))
        self.free: dict[tuple[str, int], str] = {}
        self.aware: dict[tuple[str, int, str], str] = {}
        self.original: dict[str, str] = dict(original_titles or {})
        for r in variants.select(["ad_id", "cluster_id", "strategy", "query", "title",
                                  "original_title"]).to_pylist():
            self.original.setdefault(r["ad_id"], r["original_title"])
            if r["strategy"] == "query_aware" and r["query"]:
                self.aware[(r["ad_id"], r["cluster_id"], r["query"])] = r["title"]
            else:
                self.free[(r["ad_id"], r["cluster_id"])] = r["title"]

    @classmethod
    def from_library(cls, cfg, store, version: str | None = None) -> ServingIndex:
        """The library version (default LATEST) with the assignments and active ads of the
        cycle that produced it, read from the lake through their manifests."""

        version, variants = load_variants(store, version)
        clusters = read_manifest(stage_dir(cfg.lake, version, "cluster_users"))
        if clusters is None:
            raise UserError(f"serving needs cluster_users' assignments of cycle {version} "
                            f"(no _SUCCESS under {stage_dir(cfg.lake, version, 'cluster_users')})")
        assignments = pq.read_table(clusters["outputs"]["assignments"]["path"],
                                    columns=["user_id", "cluster_id"])
        features = read_manifest(stage_dir(cfg.lake, version, "extract_features"))
        titles = None
        if features is not None:
            ads = pq.read_table(features["outputs"]["active_ads"]["path"],
                                columns=["ad_id", "title"])
            titles = dict(zip(ads.column("ad_id").to_pylist(), ads.column("title").to_pylist(),
                              strict=True))
        return cls(variants, assignments, titles, version)

    def lookup(self, ad_id: str, user_id: str, query: str | None = None) -> Creative:
        cluster = self.cluster_of.get(user_id)
        if cluster is not None:
            q = " ".join(query.lower().split()) if query else None  # ad_queries' normal form
            if q and (title := self.aware.get((ad_id, cluster, q))):
                return Creative(ad_id, title, "variant", cluster, "query_aware", self.version)
            if title := self.free.get((ad_id, cluster)):
                return Creative(ad_id, title, "variant", cluster, "query_free", self.version)
        if ad_id in self.original:
            return Creative(ad_id, self.original[ad_id], "original", cluster, None, self.version)
        return Creative(ad_id, None, "unknown_ad", cluster, None, self.version)


def lookup(cfg, ad_id: str, user_id: str, query: str | None = None,
           version: str | None = None) -> Creative:
    """One-off lookup against the configured library (opens the store for the call)."""

    with open_store(cfg.library, create_bucket=False) as store:
        return ServingIndex.from_library(cfg, store, version).lookup(ad_id, user_id, query)
