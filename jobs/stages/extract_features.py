"""Stage 1, extract_features: raw ads and clicks -> validated feature tables (PySpark).

Reads the raw `ads` and `clicks` folders (JSON lines, optionally gzipped, or Parquet),
applies the row-level rules of `sql/rules/`, and writes under
`{lake}/cycles/{cycle_id}/extract_features/`:

    user_sequences/  each user's most recent clicked ads, oldest first
    items/           unique item texts + item_hash (the embedding cache key)
    active_ads/      what the cycle generates for, with content_hash
    ad_queries/      each active ad's top search queries by clicks
    quarantine/      every rejected input row with its reason and raw text
    _SUCCESS         the manifest: inputs, config hash, counts, reconciliation, checks

Every input row is counted: rows_in = accepted + quarantined for each raw table.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import time
from pathlib import Path
from typing import Any

from jobs.platform.config import SQL_DIR, Config
from jobs.platform.errors import UserError
from jobs.platform.lake import (
    StageOutput,
    failed_dir,
    fingerprint_code,
    fingerprint_files,
    parse_cycle_id,
    run_stage,
)
from jobs.platform.validation import (
    SuiteRunner,
    feature_suite,
    quarantine_gate,
    raise_if_failed,
    raw_suite,
)

STAGE = "extract_features"
FEATURE_TABLES = ("user_sequences", "items", "active_ads", "ad_queries")
JSON_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".ndjson")
PARQUET_SUFFIXES = (".parquet",)
REQUIRED = {
    "ads": ["ad_id", "advertiser_id", "campaign_id", "title", "selling_points", "brand",
            "category", "status", "updated_at"],
    "clicks": ["user_id", "ad_id", "event_time", "event_type"],
}
OPTIONAL = {"ads": [], "clicks": ["query"]}

log = logging.getLogger(__name__)


def input_files(folder: Path, table: str) -> tuple[list[Path], list[Path]]:
    """JSON-lines and Parquet files of one raw table; a clear error when there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"input folder for raw {table} not found: {folder} "
                        f"(set inputs.{table} in the config, or run `creative-factory sample-data`)")
    json_files, parquet_files, unknown = [], [], []
    for p in sorted(folder.rglob("*")):
        if p.is_dir() or p.name.startswith((".", "_")):
            continue
        name = p.name.lower()
        if name.endswith(JSON_SUFFIXES):
            json_files.append(p)
        elif name.endswith(PARQUET_SUFFIXES):
            parquet_files.append(p)
        else:
            unknown.append(p.name)
    if unknown:
        raise UserError(f"raw {table} folder {folder} holds files of unknown format: "
                        f"{', '.join(unknown[:5])} (expected *.jsonl[.gz] or *.parquet)")
    if not json_files and not parquet_files:
        raise UserError(f"raw {table} folder {folder} holds no *.jsonl or *.parquet files")
    return json_files, parquet_files


def _check_parquet_schema(files: list[Path], table: str) -> list[str]:
    """Every file has the required columns, and a column has one type across files.
    Returns the contract's columns present in at least one file (missing ones read as null)."""
    import pyarrow.parquet as pq

    types: dict[str, tuple[str, Path]] = {}
    for f in files:
        try:
            schema = pq.read_schema(f)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is bad input
            raise UserError(f"raw {table} file {f} is not readable Parquet: {exc}") from None
        missing = [c for c in REQUIRED[table] if c not in schema.names]
        if missing:
            raise UserError(f"raw {table} file {f} lacks required columns: {', '.join(missing)}")
        for name in REQUIRED[table] + OPTIONAL[table]:
            if name not in schema.names:
                continue
            kind = str(schema.field(name).type)
            seen = types.setdefault(name, (kind, f))
            if seen[0] != kind:
                raise UserError(f"raw {table} file {f}: column {name} is {kind}, "
                                f"but {seen[0]} in {seen[1]}")
    return [c for c in REQUIRED[table] + OPTIONAL[table] if c in types]


def _raw_lines(spark, table: str, json_files: list[Path], parquet_files: list[Path]):
    """One (source_file, value) row per input record: Parquet rows are turned into JSON so
    both formats go through the same rules. Blank JSON lines are not records."""
    from pyspark.sql import functions as F

    frames = []
    if json_files:
        frames.append(
            spark.read.text([str(p) for p in json_files])
            .select(F.col("_metadata.file_path").alias("source_file"), "value")
            .where(F.trim("value") != "")
        )
    if parquet_files:
        cols = _check_parquet_schema(parquet_files, table)
        frames.append(
            spark.read.option("mergeSchema", "true").parquet(*[str(p) for p in parquet_files])
            .select(
                F.col("_metadata.file_path").alias("source_file"),
                F.to_json(F.struct(*cols)).alias("value"),
            )
        )
    df = frames[0]
    for other in frames[1:]:
        df = df.unionByName(other)
    return df


def _blank_lines(spark, json_files: list[Path]) -> int:
    from pyspark.sql import functions as F

    if not json_files:
        return 0
    return spark.read.text([str(p) for p in json_files]).where(F.trim("value") == "").count()


def _sql(spark, name: str, **params: Any):
    return spark.sql((SQL_DIR / name).read_text(), args=params or None)


def _counts_by(df, column: str) -> tuple[dict[str, int], dict[str, int]]:
    """One pass: quarantine reasons of rejected rows, and `column` values of accepted rows."""
    from pyspark.sql import functions as F

    rows = df.groupBy(F.try_element_at("reasons", F.lit(1)).alias("reason"),
                      F.when(F.size("reasons") == 0, F.col(column)).alias("value")).count()
    reasons: dict[str, int] = {}
    accepted: dict[str, int] = {}
    for r in rows.collect():
        if r["reason"] is None:
            accepted[r["value"]] = accepted.get(r["value"], 0) + r["count"]
        else:
            reasons[r["reason"]] = reasons.get(r["reason"], 0) + r["count"]
    return reasons, accepted


# Spark/Hadoop errors that mean an input file is damaged (truncated gzip, bad footer...).
CORRUPT_INPUT_MARKERS = ("EOFException", "Not in GZIP format", "is not a Parquet file",
                         "Unexpected end of input stream", "ZipException", "CorruptedInput")


class _Timer:
    """Wall time per step of the stage, kept in the manifest for the cycle report."""

    def __init__(self) -> None:
        self.steps: dict[str, float] = {}
        self._t = time.time()

    def lap(self, name: str) -> None:
        now = time.time()
        self.steps[name] = round(now - self._t, 2)
        self._t = now
        log.info("%s: %s done in %.1fs", STAGE, name, self.steps[name])  # progress for long runs


def run(cfg: Config, cycle_id: str, force: bool = False) -> dict[str, Any]:
    """Extract features for one cycle; returns the stage manifest (skipped when current)."""
    interval_end = parse_cycle_id(cycle_id)
    files = {t: input_files(getattr(cfg.inputs, t), t) for t in ("ads", "clicks")}
    inputs = {
        t: {"path": str(getattr(cfg.inputs, t)), "files": len(js) + len(pq_),
            "fingerprint": fingerprint_files(js + pq_)}
        for t, (js, pq_) in files.items()
    }
    # Re-run when the inputs, the stage's settings or its code (module, SQL) change.
    config_hash = "-".join([
        cfg.section_hash("features", "validation"),
        fingerprint_code(Path(__file__), SQL_DIR / "rules", SQL_DIR / "features"),
        hashlib.sha256(json.dumps(cfg.spark.extra_conf, sort_keys=True).encode()).hexdigest()[:8],
    ])
    try:
        return run_stage(cfg, cycle_id, STAGE, inputs=inputs, config_hash=config_hash,
                         build=lambda out: _extract(cfg, cycle_id, out, interval_end, files),
                         force=force)
    except Exception as exc:
        text = str(exc)
        if not isinstance(exc, UserError) and any(m in text for m in CORRUPT_INPUT_MARKERS):
            paths = re.findall(r"file:(/\S+?)[,\s'\"]", text)
            where = f" ({paths[0]})" if paths else ""
            reason = next(m for m in CORRUPT_INPUT_MARKERS if m in text)
            raise UserError(f"an input file of {STAGE} is damaged{where}: {reason}; "
                            "replace or remove it and re-run") from None
        raise


def _extract(cfg: Config, cycle_id: str, out: Path, interval_end, files) -> StageOutput:
    """Classify the raw rows (quarantine the rejected), gate on the raw input, write and
    check the feature tables. A failed gate raises; the runner keeps the staging folder
    as `.extract_features.failed` for inspection."""
    from jobs.platform.spark import spark_session

    timer = _Timer()
    spark = spark_session(cfg, app=f"{STAGE}-{cycle_id}")
    timer.lap("spark_start")
    f = cfg.features
    failed = failed_dir(cfg.lake, cycle_id, STAGE)
    try:
        ads_classified, clicks_classified, counts = _classify(
            spark, cfg, cycle_id, out, interval_end, files, timer)

        # -- gates on the raw input: quarantined share + the raw GX suites -------------------
        mostly = 1.0 - cfg.validation.quarantine_threshold
        runner = SuiteRunner()
        raw_failures = []
        for table, df in (("ads", ads_classified), ("clicks", clicks_classified)):
            suite = raw_suite(table, mostly, f.max_title_chars, f.max_query_chars)
            raw_failures += runner.validate(table, df, suite)
        problems = quarantine_gate(counts, cfg.validation.quarantine_threshold)
        timer.lap("raw_checks")
        if problems or raw_failures:
            raise_if_failed(STAGE, problems, raw_failures, f"quarantined rows in {failed}/quarantine")

        # -- features --------------------------------------------------------------------------
        params = {
            "active_ads": {}, "items": {},
            "user_sequences": {"max_history": f.max_history},
            "ad_queries": {"top_queries": f.top_queries},
        }
        outputs: dict[str, Any] = {}
        feature_failures = []
        for table in FEATURE_TABLES:
            path = out / table
            _sql(spark, f"features/{table}.sql", **params[table]).write.parquet(str(path))
            timer.lap(f"write_{table}")
            written = spark.read.parquet(str(path))
            suite = feature_suite(table, f.max_history, f.top_queries, f.max_title_chars)
            feature_failures += runner.validate(table, written, suite)
            outputs[table] = {"path": table, "rows": written.count()}
            timer.lap(f"check_{table}")
        written_q = spark.read.parquet(str(out / "quarantine"))
        feature_failures += runner.validate(
            "quarantine", written_q, feature_suite("quarantine", 1, 1, 1))
        outputs["quarantine"] = {"path": "quarantine", "rows": written_q.count()}
        timer.lap("check_quarantine")
        if feature_failures:
            raise_if_failed(STAGE, [], feature_failures, f"the rejected outputs in {failed}")
        shutil.rmtree(out / "_work")
        log.info("%s for cycle %s: %s", STAGE, cycle_id,
                 {k: v["rows"] for k, v in outputs.items()})
        return StageOutput(outputs, {"reconciliation": counts, "validation": runner.results,
                                     "timings_s": timer.steps})
    finally:
        spark.catalog.clearCache()


def _classify(spark, cfg: Config, cycle_id: str, out: Path, interval_end, files,
              timer: _Timer):
    """Classify raw ads and clicks by the rules in sql/rules/, write every rejected row to
    `out/quarantine` with its reason, and reconcile rows_in = accepted + quarantined.
    Returns (ads_classified, clicks_classified, counts); the views the feature SQL reads
    (ads_current, clicks_valid) are registered."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    (ads_json, ads_parquet), (clicks_json, clicks_parquet) = files["ads"], files["clicks"]
    f = cfg.features
    mem = StorageLevel.MEMORY_AND_DISK
    _raw_lines(spark, "ads", ads_json, ads_parquet).createOrReplaceTempView("raw_ads_lines")
    ads_classified = _sql(
        spark, "rules/ads_classified.sql", max_title_chars=f.max_title_chars,
        max_selling_points=f.max_selling_points, interval_end=interval_end,
    ).persist(mem)
    ads_classified.createOrReplaceTempView("ads_classified")
    ads_resolved = _sql(spark, "rules/ads_resolved.sql").persist(mem)
    text_cols = [F.col(c) for c in f.item_text_fields]
    ads_current = (
        ads_resolved.where(F.size("reasons") == 0)
        .withColumn("item_text", F.concat_ws(" | ", *text_cols))
        .withColumn("item_hash", F.substring(F.sha2("item_text", 256), 1, 16))
        .persist(mem)
    )
    ads_current.createOrReplaceTempView("ads_current")

    _raw_lines(spark, "clicks", clicks_json, clicks_parquet).createOrReplaceTempView(
        "raw_clicks_lines")
    # Clicks are many: classify them once into Parquet in the staging folder and read
    # that back (column pruning, no reliance on a cache that may not fit in memory).
    work = out / "_work"
    _sql(spark, "rules/clicks_classified.sql", max_query_chars=f.max_query_chars,
         interval_end=interval_end).write.parquet(str(work / "clicks_classified"))
    clicks_classified = spark.read.parquet(str(work / "clicks_classified"))
    clicks_classified.where(F.size("reasons") == 0).createOrReplaceTempView("clicks_valid")

    # every rejected row goes to quarantine, with its reason and raw text
    keep = cfg.validation.raw_sample_chars

    def rejected(df, table: str, detail=None):
        return df.where(F.size("reasons") > 0).select(
            F.lit(table).alias("source_table"),
            "source_file",
            F.col("reasons")[0].alias("reason"),
            "reasons",
            (detail if detail is not None else F.lit(None).cast("string")).alias("detail"),
            # raw text for people; invalid UTF-8 keeps its exact bytes in raw_base64
            F.make_valid_utf8(F.substring("value", 1, keep)).alias("raw"),
            F.when(~F.is_valid_utf8("value"),
                   F.base64(F.substring(F.col("value").cast("binary"), 1, keep)))
            .alias("raw_base64"),
            F.lit(cycle_id).alias("cycle_id"),
        )

    # -- reconciliation: rows_in = accepted + quarantined, per raw table ------------------
    # (the first action: it fills the caches above with full parallelism)
    ads_reasons, _ = _counts_by(ads_classified, "status")
    ads_conflicts, status_counts = _counts_by(ads_resolved, "status")
    clicks_reasons, type_counts = _counts_by(clicks_classified, "event_type")
    timer.lap("classify")

    quarantine = (rejected(ads_classified, "ads")
                  .unionByName(rejected(ads_resolved, "ads", F.col("detail")))
                  .unionByName(rejected(clicks_classified, "clicks")))
    # repartition, not coalesce: coalesce(1) would pull the whole classification
    # (and the cache it fills) into a single task
    quarantine.repartition(1).write.parquet(str(out / "quarantine"))
    timer.lap("write_quarantine")
    for k, v in ads_conflicts.items():
        ads_reasons[k] = ads_reasons.get(k, 0) + v
    counts = {
        "ads": {"rows_in": sum(ads_reasons.values()) + sum(status_counts.values()),
                "accepted": sum(status_counts.values()),
                "quarantined": sum(ads_reasons.values()), "reasons": ads_reasons,
                "accepted_by_status": status_counts,
                "blank_lines_skipped": _blank_lines(spark, ads_json)},
        "clicks": {"rows_in": sum(clicks_reasons.values()) + sum(type_counts.values()),
                   "accepted": sum(type_counts.values()),
                   "quarantined": sum(clicks_reasons.values()), "reasons": clicks_reasons,
                   "accepted_by_event_type": type_counts,
                   "blank_lines_skipped": _blank_lines(spark, clicks_json)},
    }
    # rows_in is also counted on the raw lines themselves, independently of the rules
    for table, c in counts.items():
        raw = spark.table(f"raw_{table}_lines").count()
        if raw != c["rows_in"] or c["rows_in"] != c["accepted"] + c["quarantined"]:
            raise RuntimeError(f"reconciliation bug in {STAGE}: {table} raw={raw} {c}")
    timer.lap("reconcile")
    return ads_classified, clicks_classified, counts

