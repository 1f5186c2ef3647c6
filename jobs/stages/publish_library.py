"""Stage 8, publish_library: the passing variants -> a new version of the creative library.

Layout (DESIGN.md, Creative library), under `s3://{bucket}/{prefix}/`:

    versions/{cycle_id}/creatives.parquet            all passing variants, one row each
    versions/{cycle_id}/advertisers/{advertiser}.jsonl   the same rows, one file per advertiser
    versions/{cycle_id}/report.html, report.md, ...   the cycle report, when it has run
    versions/{cycle_id}/manifest.json                written after the data
    LATEST                                           the current version's id, written last

A variant row: ad_id, advertiser_id, cluster_id, strategy, query, title, original_title,
score, model_version, centroid_version, cycle_id. No user ids: serving maps a user to a
cluster through cluster_users' assignments, which never leave the lake.

Order of work, so that a reader never sees half a version:
1. build every object locally (the stage's staging folder) and checksum it (sha256);
2. gate: the ids are safe S3 key parts and a Great Expectations suite passes on the
   variants (non-empty titles within length bounds, unique (ad, cluster, strategy, query),
   exactly the library columns: no user-id column, no user-id-looking values). A failed
   gate fails the task and uploads nothing;
3. upload the data objects (an object already there with the same sha256 is skipped: a
   re-run of the same cycle writes nothing new), then `manifest.json` (counts, checksums,
   model and config versions, lineage = every stage manifest of the cycle);
4. check every object against the manifest, then point `LATEST` at the version (never
   backwards: a late re-run of an older cycle leaves a newer LATEST alone);
5. keep the newest `library.keep_versions` complete versions, deleting older ones only
   now that LATEST has moved (manifest first, so a version stops being trusted before its
   data goes).
Readers resolve LATEST and trust only versions with a manifest (`jobs/platform/library.py`).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs import __version__
from jobs.platform import s3
from jobs.platform.config import Config
from jobs.platform.errors import DataQualityError, UserError
from jobs.platform.lake import (
    MANIFEST,
    StageOutput,
    fingerprint_code,
    parse_cycle_id,
    read_manifest,
    run_stage,
    stage_dir,
)
from jobs.platform.library import list_versions, read_latest
from jobs.platform.s3 import file_digests, open_store
from jobs.platform.validation import ID_PATTERN, SuiteRunner, _gx
from jobs.stages.badcase_rules import unsafe_id

STAGE = "publish_library"
log = logging.getLogger(__name__)

LIBRARY_SCHEMA = pa.schema([
    ("ad_id", pa.string()), ("advertiser_id", pa.string()), ("cluster_id", pa.int32()),
    ("strategy", pa.string()), ("query", pa.string()), ("title", pa.string()),
    ("original_title", pa.string()), ("score", pa.float32()), ("model_version", pa.string()),
    ("centroid_version", pa.string()), ("cycle_id", pa.string()),
])
LIBRARY_KEY = ["ad_id", "cluster_id", "strategy", "query"]
STRATEGIES = ["query_aware", "query_free"]
RESERVED = {"creatives.parquet", "manifest.json", "advertisers", "LATEST"}
UPLOAD_THREADS = 8

# Broken text, checked by the gate with its own regular expressions, independently of the
# Badcase Killer's rules: what the killer let through must still not be published.
_FUNCTION = "for|and|with|of|the|a|an|to|in|on|by|or|from|at|your"
REPEATED_WORD = r"(?i)\b([a-z]\w*|\w{2,})\s+\1\b"  # "a a", "PLA PLA+" (not "1 1/2")
# a loop inside a clause (up to `,` `:` `;` `|` or ` - `): two whitespace-separated words
# (not separators) twice ("11\" x 11\" x", "USB-C Hub USB-C Hub"; not "5.5 x 5.5")
REPEATED_BIGRAM = (r"(?i)(?:^|\s)(\w\S*\s+\w\S*)(?=\s|$)(?:(?!\s[-–—|]\s)[^,:;|])*?\s\1"
                   r"(?=[\s,:;.!?]|$)")
# ends on a separator or a function word; "in" after a number is the unit ("1/2 in")
CUT_OFF = (rf"(?i)(?:[,:;]|(?:^|\s)(?:{_FUNCTION.replace('|in|', '|')}|[&|/+–—-])"
           r"[.!?\"')]*|(?:^|(?<![\d\"'])\s)in[.!?\"')]*)\s*$")


def content_words_regex(n: int) -> str:
    """Matches a title with at least `n` words that are not function words."""
    return rf"(?i)^(?:.*?\b(?!(?:{_FUNCTION})\b)[a-z0-9][\w'.-]*){{{n}}}"


class PandasSuiteRunner:
    """`jobs.platform.validation.SuiteRunner` over pandas frames: the same ephemeral GX context and
    the same failure reporting, without starting Spark for a table that is already local."""

    def __init__(self) -> None:
        gx = _gx()
        from great_expectations.data_context.types.base import (
            DataContextConfig,
            InMemoryStoreBackendDefaults,
            ProgressBarsConfig,
        )

        self.context = gx.get_context(mode="ephemeral", project_config=DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(), analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False)))
        self.source = self.context.data_sources.add_pandas(name="library")
        self.results: dict[str, dict[str, Any]] = {}
        self.validate = SuiteRunner.validate.__get__(self)  # same reporting as every gate


def library_suite(cfg: Config):
    """The checkpoint on the passing variants that gates the upload."""
    gx = _gx()
    E = gx.expectations
    lib = cfg.library
    suite = gx.ExpectationSuite(name="library_variants")
    suite.add_expectation(E.ExpectTableRowCountToBeBetween(min_value=1))
    # exactly the library columns: a user_id (or any other) column fails the gate
    suite.add_expectation(E.ExpectTableColumnsToMatchSet(
        column_set=LIBRARY_SCHEMA.names, exact_match=True))
    for col in ("ad_id", "advertiser_id", "cluster_id", "strategy", "title", "original_title",
                "model_version", "cycle_id"):
        suite.add_expectation(E.ExpectColumnValuesToNotBeNull(column=col))
    suite.add_expectation(E.ExpectColumnValueLengthsToBeBetween(
        column="title", min_value=lib.min_title_chars, max_value=lib.max_title_chars))
    suite.add_expectation(E.ExpectCompoundColumnsToBeUnique(column_list=LIBRARY_KEY))
    suite.add_expectation(E.ExpectColumnValuesToBeInSet(column="strategy",
                                                        value_set=STRATEGIES))
    for col in ("ad_id", "advertiser_id"):  # ids become S3 key parts
        suite.add_expectation(E.ExpectColumnValuesToMatchRegex(column=col, regex=ID_PATTERN))
        suite.add_expectation(E.ExpectColumnValuesToNotMatchRegex(column=col, regex=r"\.\."))
    for col in ("title", "original_title", "query"):  # no user-id-looking values
        suite.add_expectation(E.ExpectColumnValuesToNotMatchRegex(
            column=col, regex=cfg.badcase.user_id_pattern))
    for name, regex in (("repeated word", REPEATED_WORD), ("repeated bigram", REPEATED_BIGRAM),
                        ("cut-off ending", CUT_OFF)):  # no degenerate text
        suite.add_expectation(E.ExpectColumnValuesToNotMatchRegex(
            column="title", regex=regex, meta={"name": name}))
    suite.add_expectation(E.ExpectColumnValuesToMatchRegex(
        column="title", regex=content_words_regex(lib.min_content_words),
        meta={"name": f"at least {lib.min_content_words} content words"}))
    return suite


def cycle_suite(cfg: Config):
    """The checkpoint on the cycle as a whole: enough of it survived to be worth publishing."""
    gx = _gx()
    E = gx.expectations
    suite = gx.ExpectationSuite(name="library_cycle")
    suite.add_expectation(E.ExpectColumnValuesToBeBetween(
        column="passing_share", min_value=cfg.library.min_passing_share))
    suite.add_expectation(E.ExpectColumnValuesToBeBetween(
        column="ads_covered_share", min_value=cfg.library.min_ads_covered_share))
    return suite


def cycle_numbers(cfg: Config, cycle_id: str, table: pa.Table) -> dict[str, Any]:
    """Passing variants per generation request, and ads with a passing variant per matched
    ad (match_ads' summary)."""
    match = read_manifest(stage_dir(cfg.lake, cycle_id, "match_ads"))
    if match is None:
        raise UserError(f"{STAGE} for cycle {cycle_id} needs match_ads' summary (no _SUCCESS)")
    requests = int(match["summary"]["requests"])
    ads = int(match["summary"]["ads_matched"])
    covered = len(table.column("ad_id").unique()) if table.num_rows else 0
    return {"passing": table.num_rows, "requests": requests, "ads_covered": covered,
            "ads_matched": ads,
            "passing_share": round(table.num_rows / requests, 4) if requests else 0.0,
            "ads_covered_share": round(covered / ads, 4) if ads else 0.0}


def _inputs(cfg: Config, cycle_id: str) -> dict:
    kill = read_manifest(stage_dir(cfg.lake, cycle_id, "kill_badcases"))
    if kill is None:
        raise UserError(f"{STAGE} for cycle {cycle_id} needs kill_badcases first (no _SUCCESS "
                        f"under {stage_dir(cfg.lake, cycle_id, 'kill_badcases')})")
    return kill


def lineage(cfg: Config, cycle_id: str) -> dict[str, dict]:
    """Every committed stage manifest of the cycle except this stage's own."""
    root = Path(cfg.lake) / "cycles" / cycle_id
    out = {}
    for d in sorted(root.iterdir()) if root.is_dir() else []:
        if d.is_dir() and not d.name.startswith(".") and d.name != STAGE:
            m = read_manifest(d)
            if m is not None:
                out[d.name] = m
    return out


def report_files(cfg: Config, cycle_id: str) -> list[Path]:
    """Files of the cycle report, when the report stage has committed."""
    d = stage_dir(cfg.lake, cycle_id, "report")
    if read_manifest(d) is None:
        return []
    files = sorted(p for p in d.rglob("*") if p.is_file() and not p.is_symlink()
                   and p.name != MANIFEST and not any(x.startswith(".") for x in
                                                      p.relative_to(d).parts))
    for p in files:
        if p.relative_to(d).parts[0] in RESERVED:
            raise UserError(f"report file {p} would overwrite the library's own "
                            f"{p.relative_to(d).parts[0]}; rename it in the report stage")
    return files


def _fingerprint(cfg: Config, cycle_id: str, kill: dict) -> dict[str, Any]:
    return {"passing": kill["outputs"]["passing"], "kill_finished": kill["finished_at"],
            "lineage": {s: m.get("finished_at") for s, m in lineage(cfg, cycle_id).items()},
            "report": [[str(p), p.stat().st_size, p.stat().st_mtime_ns]
                       for p in report_files(cfg, cycle_id)],
            "target": f"{cfg.library.endpoint_url or 'embedded:' + str(cfg.library.embedded_dir)}"
                      f"/{cfg.library.bucket}/{cfg.library.prefix}",
            "code": fingerprint_code(Path(__file__), Path(s3.__file__))}


def missing_library_columns(passing: pa.Table) -> list[str]:
    """Library columns the passing rows lack (`cycle_id` is added on publishing)."""
    return sorted(set(LIBRARY_SCHEMA.names) - {"cycle_id"} - set(passing.column_names))


def library_table(passing: pa.Table, cycle_id: str) -> pa.Table:
    """Passing generation rows -> library variant rows (library columns only), sorted."""
    n = passing.num_rows
    cols = {}
    for f in LIBRARY_SCHEMA:
        if f.name == "cycle_id":
            cols[f.name] = pa.array([cycle_id] * n, pa.string())
        else:
            cols[f.name] = passing.column(f.name).cast(f.type)
    table = pa.table(cols, schema=LIBRARY_SCHEMA)
    idx = pc.sort_indices(table, sort_keys=[("advertiser_id", "ascending"),
                                            ("ad_id", "ascending"), ("cluster_id", "ascending"),
                                            ("strategy", "ascending"), ("query", "ascending")],
                          null_placement="at_start")
    return table.take(idx)


def gate_failures(cfg: Config, cycle_id: str, table: pa.Table) -> tuple[list[str], dict]:
    """(what fails the gate, one line each; the suites' results). Unsafe ids, the suite on
    the variants, and the suite on the cycle (thresholds in `library`)."""
    import pandas as pd

    bad_ids = sorted({repr(v) for col in ("ad_id", "advertiser_id")
                      for v in table.column(col).unique().to_pylist() if unsafe_id(v)})
    runner = PandasSuiteRunner()
    with warnings.catch_warnings():  # pandas warns on the back-references' capture groups
        warnings.filterwarnings("ignore", message="This pattern is interpreted")
        failures = runner.validate("library variants", table.to_pandas(), library_suite(cfg))
    nums = cycle_numbers(cfg, cycle_id, table)
    cycle_fail = runner.validate("cycle", pd.DataFrame([nums]), cycle_suite(cfg))
    parts = ([f"unsafe ids (would leave the library prefix): {', '.join(bad_ids[:5])}"]
             if bad_ids else []) + [f"expectation failed: {f}" for f in failures]
    for f in cycle_fail:
        if f.column == "passing_share":
            parts.append(f"expectation failed: {f.expectation} on cycle.passing_share: "
                         f"{nums['passing']:,} passing variants of {nums['requests']:,} "
                         f"requests = {nums['passing_share']:.1%} < library.min_passing_share "
                         f"{cfg.library.min_passing_share:.0%}")
        elif f.column == "ads_covered_share":
            parts.append(f"expectation failed: {f.expectation} on cycle.ads_covered_share: "
                         f"{nums['ads_covered']:,} of {nums['ads_matched']:,} matched ads "
                         f"= {nums['ads_covered_share']:.1%} < "
                         f"library.min_ads_covered_share {cfg.library.min_ads_covered_share:.0%}")
        else:
            parts.append(f"expectation failed: {f}")
    return parts, {**runner.results, "cycle_numbers": nums}


def gate(cfg: Config, cycle_id: str, table: pa.Table) -> dict:
    """`gate_failures`, raising DataQualityError (one line) when anything fails."""
    parts, results = gate_failures(cfg, cycle_id, table)
    if parts:
        raise DataQualityError(f"{STAGE} refused to publish cycle {cycle_id}: "
                               + "; ".join(parts) + ". Nothing was uploaded; LATEST is "
                               "unchanged (docs/runbook.md, publish_library)")
    return results


def write_objects(table: pa.Table, out: Path, reports: list[Path], report_root: Path,
                  ) -> dict[str, Path]:
    """Every data object of the version, written under `out`: relative key -> local file."""
    objects: dict[str, Path] = {}
    pq.write_table(table, out / "creatives.parquet", compression="zstd")
    objects["creatives.parquet"] = out / "creatives.parquet"
    adv_dir = out / "advertisers"
    adv_dir.mkdir()
    adv = table.column("advertiser_id")
    # rows are sorted by advertiser: each advertiser is one contiguous slice
    bounds = (pc.run_end_encode(adv.combine_chunks()).run_ends.to_pylist()
              if table.num_rows else [])
    start = 0
    for end in bounds:
        part = table.slice(start, end - start)
        name = part.column("advertiser_id")[0].as_py()
        path = adv_dir / f"{name}.jsonl"
        with open(path, "w", encoding="utf-8") as f:
            for row in part.to_pylist():
                f.write(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n")
        objects[f"advertisers/{name}.jsonl"] = path
        start = end
    for p in reports:
        rel = p.relative_to(report_root).as_posix()
        dst = out / "report" / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, dst)
        objects[rel] = dst
    return objects


CONTENT_TYPES = {".parquet": "application/vnd.apache.parquet", ".jsonl": "application/x-ndjson",
                 ".json": "application/json", ".html": "text/html; charset=utf-8",
                 ".md": "text/markdown; charset=utf-8", ".png": "image/png",
                 ".svg": "image/svg+xml", ".csv": "text/csv"}


def content_type(key: str) -> str:
    return CONTENT_TYPES.get(Path(key).suffix, "application/octet-stream")


def build_manifest(cfg: Config, cycle_id: str, table: pa.Table, checksums: dict[str, dict],
                   kill: dict, gx_results: dict) -> dict:
    """manifest.json: deterministic for the same inputs (no wall-clock time of its own)."""
    stages = lineage(cfg, cycle_id)

    def distinct(col: str) -> list:
        return sorted(v for v in table.column(col).unique().to_pylist() if v is not None)

    strategies = pc.value_counts(table.column("strategy")).to_pylist()
    return {
        "format": 1,
        "library_version": cycle_id,
        "counts": {
            "variants": table.num_rows,
            "ads": len(table.column("ad_id").unique()),
            "advertisers": len(table.column("advertiser_id").unique()),
            "clusters": len(table.column("cluster_id").unique()),
            "by_strategy": {s["values"]: s["counts"] for s in strategies},
            "generations": kill.get("counts", {}).get("generations"),
            "killed": kill.get("counts", {}).get("killed"),
            "kills_by_reason": kill.get("kills_by_reason", {}),
        },
        "objects": checksums,
        "model_versions": {"creator": distinct("model_version"),
                           "centroid": distinct("centroid_version"),
                           "hllm": sorted({m.get("model_version") for s, m in stages.items()
                                           if s in ("embed_users",) and m.get("model_version")})},
        "config_versions": {s: m.get("config_hash") for s, m in stages.items()},
        "code_version": __version__,
        "validation": gx_results,
        "lineage": stages,
    }


def _upload_all(store, objects: dict[str, Path], checksums: dict[str, dict], version_key: str,
                progress: bool) -> dict[str, int]:
    """Upload objects not already there with the same checksum; returns counts."""
    from tqdm import tqdm

    def one(rel: str) -> tuple[str, int]:
        key = f"{version_key}/{rel}"
        have = store.head(key)
        want = checksums[rel]
        if have and have["bytes"] == want["bytes"] and (
                have["sha256"] == want["sha256"] or have["etag"] == want["md5"]):
            return "same", 0
        store.upload_file(objects[rel], key, content_type(rel), want["sha256"])
        return "uploaded", want["bytes"]

    counts = {"uploaded": 0, "same": 0, "bytes_uploaded": 0}
    keys = sorted(objects)
    with tqdm(total=len(keys), desc="publish_library", unit="object", disable=not progress,
              mininterval=2) as bar, ThreadPoolExecutor(UPLOAD_THREADS) as pool:
        for state, nbytes in pool.map(one, keys):
            counts[state] += 1
            counts["bytes_uploaded"] += nbytes
            bar.update()
    return counts


def _verify(store, version_key: str, checksums: dict[str, dict]) -> None:
    """Every object of the manifest is there with its size and checksum (read after write)."""
    listed = {o["Key"][len(version_key) + 1:]: o["Size"] for o in store.list_keys(version_key + "/")}
    wrong = [rel for rel, c in checksums.items() if listed.get(rel) != c["bytes"]]
    if wrong:
        raise RuntimeError(f"{len(wrong)} objects of {version_key} are missing or of the wrong "
                           f"size after upload (e.g. {wrong[:3]}); LATEST not moved")


def apply_retention(store, keep: int, latest: str | None) -> list[str]:
    """Delete complete versions beyond the newest `keep` (never LATEST's), and incomplete
    leftovers older than the oldest kept one; returns the deleted version ids."""

    versions = list_versions(store)
    complete = sorted((v["version"] for v in versions if v["complete"]), reverse=True)
    kept = set(complete[:keep]) | ({latest} if latest else set())
    if not kept:
        return []
    oldest_kept = min(kept)
    doomed = [v["version"] for v in versions
              if v["version"] not in kept and (v["complete"] or v["version"] < oldest_kept)]
    for v in sorted(doomed):
        vkey = store.key("versions", v)
        store.delete_keys([f"{vkey}/manifest.json"])  # stop trusting it before deleting data
        store.delete_keys([o["Key"] for o in store.list_keys(vkey + "/")])
        log.info("library: deleted version %s (keeping %d)", v, keep)
    return sorted(doomed)


def run(cfg: Config, cycle_id: str, force: bool = False, progress: bool = True) -> dict[str, Any]:
    """Publish the cycle's passing variants as library version `cycle_id` (all or nothing).
    Up to date only while the library still holds this version's manifest."""
    parse_cycle_id(cycle_id)  # the version id becomes an S3 key part: validate its shape
    kill = _inputs(cfg, cycle_id)
    with open_store(cfg.library) as store:
        return run_stage(cfg, cycle_id, STAGE, inputs=_fingerprint(cfg, cycle_id, kill),
                         config_hash=cfg.section_hash("library", "badcase"),
                         build=lambda out: _publish(cfg, cycle_id, kill, store, out, progress),
                         still_valid=lambda existing: _in_library(store, cycle_id, existing),
                         force=force, keep_failed=False)


def _in_library(store, cycle_id: str, existing: dict[str, Any]) -> bool:
    remote = store.head(f"{store.key('versions', cycle_id)}/manifest.json")
    if remote and (remote["sha256"] == existing.get("manifest_sha256")
                   or remote["etag"] == existing.get("manifest_md5")):
        return True
    log.warning("%s: cycle %s was published before but %s is missing or differs: "
                "publishing again", STAGE, cycle_id, store.uri("versions", cycle_id))
    return False


def _publish(cfg: Config, cycle_id: str, kill: dict, store, out: Path,
             progress: bool) -> StageOutput:
    """Gate the variants, write the version's objects into `out`, upload them, verify, then
    move LATEST (never backwards) and apply retention."""
    version_key = store.key("versions", cycle_id)
    timings: dict[str, float] = {}
    t0 = time.time()
    try:
        passing = pq.read_table(kill["outputs"]["passing"]["path"])
    except (OSError, pa.ArrowInvalid) as exc:
        raise UserError(f"{STAGE}: cannot read kill_badcases' passing rows: {exc}") from None
    missing = missing_library_columns(passing)
    if missing:
        raise UserError(f"{STAGE}: passing rows of cycle {cycle_id} lack {missing}")
    table = library_table(passing, cycle_id)
    timings["read"] = round(time.time() - t0, 3)

    t0 = time.time()
    try:
        gx_results = gate(cfg, cycle_id, table)
    except DataQualityError as exc:
        log.error("%s", exc)
        raise
    timings["gate"] = round(time.time() - t0, 3)

    t0 = time.time()
    report_root = stage_dir(cfg.lake, cycle_id, "report")
    objects = write_objects(table, out, report_files(cfg, cycle_id), report_root)
    rows_of = {"creatives.parquet": table.num_rows}
    checksums = {rel: {**file_digests(p), "bytes": p.stat().st_size,
                       **({"rows": rows_of[rel]} if rel in rows_of else {})}
                 for rel, p in sorted(objects.items())}
    manifest = build_manifest(cfg, cycle_id, table, checksums, kill, gx_results)
    manifest_bytes = (json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n"
                      ).encode()
    (out / "manifest.json").write_bytes(manifest_bytes)
    manifest_digest = file_digests(out / "manifest.json")
    manifest_sha = manifest_digest["sha256"]
    timings["build"] = round(time.time() - t0, 3)

    t0 = time.time()
    latest_before = read_latest(store)
    try:
        counts = _upload_all(store, objects, checksums, version_key, progress)
        have = store.head(f"{version_key}/manifest.json")
        if have and (have["sha256"] == manifest_sha or have["etag"] == manifest_digest["md5"]):
            counts["same"] += 1
        else:
            store.put_bytes(f"{version_key}/manifest.json", manifest_bytes,
                            "application/json", manifest_sha)
            counts["uploaded"] += 1
        _verify(store, version_key, {**checksums, "manifest.json": {
            "bytes": len(manifest_bytes)}})
        timings["upload"] = round(time.time() - t0, 3)
        latest_after = _move_latest(store, cycle_id, latest_before)
    except Exception:
        log.error("%s of cycle %s failed before LATEST moved: LATEST still names %s; "
                  "a re-run uploads what is missing and completes it", STAGE, cycle_id,
                  latest_before)
        raise
    t0 = time.time()
    deleted = apply_retention(store, cfg.library.keep_versions, latest_after)
    timings["retention"] = round(time.time() - t0, 3)
    log.info("%s for cycle %s: %s variants, %d objects (%d uploaded, %d unchanged); "
             "LATEST %s -> %s", STAGE, cycle_id, table.num_rows, len(objects) + 1,
             counts["uploaded"], counts["same"], latest_before, latest_after)
    return StageOutput(
        {"library": {"path": store.uri("versions", cycle_id) + "/", "rows": table.num_rows}},
        {"library_version": cycle_id, "manifest_sha256": manifest_sha,
         "manifest_md5": manifest_digest["md5"],
         "objects": len(objects) + 1, "upload": counts,
         "latest_before": latest_before, "latest_after": latest_after,
         "deleted_versions": deleted, "counts": manifest["counts"],
         "endpoint": store.endpoint_url or "aws", "bucket": store.bucket,
         "prefix": store.prefix, "timings_s": timings})


def _move_latest(store, cycle_id: str, latest_before: str | None) -> str:
    """Point LATEST at this version unless it names a newer one; returns what it names."""
    if latest_before is None or latest_before < cycle_id:
        store.put_bytes(store.key("LATEST"), cycle_id.encode(), "text/plain")
        return cycle_id
    if latest_before != cycle_id:
        log.warning("%s: LATEST names %s, newer than %s: left as it is", STAGE,
                    latest_before, cycle_id)
    return latest_before
