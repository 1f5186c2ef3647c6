"""Data contracts as Great Expectations 1.x suites, and the gates that use them.

Two kinds of check guard every stage that reads or writes tables:

* Row-level rules (in `sql/rules/`) route each bad row to `quarantine` with a reason.
  `quarantine_gate` fails the stage when a table's quarantined share passes the
  configured threshold, naming the table, the share and the rules that fired most.
* Great Expectations suites, written here as code: the raw suites check the raw contract
  on the parsed input (with `mostly` = 1 - threshold, so a few bad rows pass and a broken
  feed does not); the feature suites check the output contract on what the stage wrote
  (no tolerance: a violation there is a bug). A failed suite names each expectation, the
  table and the unexpected count.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jobs.platform.errors import DataQualityError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
HASH_PATTERN = r"^[0-9a-f]{16}$"


def _gx():
    # Never phone home: analytics off before GX is imported (no network at run time).
    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    import great_expectations as gx

    return gx


def raw_suite(table: str, mostly: float, max_title_chars: int, max_query_chars: int):
    """The raw input contract of DESIGN.md, checked on the parsed (typed) input rows."""
    gx = _gx()
    E = gx.expectations
    suite = gx.ExpectationSuite(name=f"raw_{table}")
    suite.add_expectation(E.ExpectTableRowCountToBeBetween(min_value=1))
    if table == "ads":
        for col in ("ad_id", "advertiser_id", "campaign_id", "title", "selling_points", "brand",
                    "category", "status", "updated_at"):
            suite.add_expectation(E.ExpectColumnValuesToNotBeNull(column=col, mostly=mostly))
        suite.add_expectation(E.ExpectColumnValueLengthsToBeBetween(
            column="title", min_value=1, max_value=max_title_chars, mostly=mostly))
        suite.add_expectation(E.ExpectColumnValuesToBeInSet(
            column="status", value_set=["active", "paused"], mostly=mostly))
        suite.add_expectation(E.ExpectColumnValuesToMatchRegex(
            column="ad_id", regex=ID_PATTERN, mostly=mostly))
    elif table == "clicks":
        for col in ("user_id", "ad_id", "event_time", "event_type"):
            suite.add_expectation(E.ExpectColumnValuesToNotBeNull(column=col, mostly=mostly))
        suite.add_expectation(E.ExpectColumnValuesToBeInSet(
            column="event_type", value_set=["impression", "click", "conversion"], mostly=mostly))
        suite.add_expectation(E.ExpectColumnValueLengthsToBeBetween(
            column="query", max_value=max_query_chars, mostly=mostly))
    else:
        raise ValueError(f"no raw suite for table {table!r}")
    return suite


def feature_suite(table: str, max_history: int, top_queries: int, max_title_chars: int):
    """The output contract of extract_features, checked on what the stage wrote."""
    gx = _gx()
    E = gx.expectations
    suite = gx.ExpectationSuite(name=f"features_{table}")
    if table == "user_sequences":
        suite.add_expectation(E.ExpectColumnValuesToNotBeNull(column="user_id"))
        suite.add_expectation(E.ExpectColumnValuesToBeUnique(column="user_id"))
        suite.add_expectation(E.ExpectColumnValuesToBeBetween(
            column="history_length", min_value=1, max_value=max_history))
        suite.add_expectation(E.ExpectColumnValuesToNotBeNull(column="item_hashes"))
    elif table == "items":
        suite.add_expectation(E.ExpectColumnValuesToBeUnique(column="item_hash"))
        suite.add_expectation(E.ExpectColumnValuesToMatchRegex(
            column="item_hash", regex=HASH_PATTERN))
        suite.add_expectation(E.ExpectColumnValuesToNotBeNull(column="item_text"))
    elif table == "active_ads":
        suite.add_expectation(E.ExpectColumnValuesToBeUnique(column="ad_id"))
        suite.add_expectation(E.ExpectColumnValuesToMatchRegex(column="ad_id", regex=ID_PATTERN))
        suite.add_expectation(E.ExpectColumnValueLengthsToBeBetween(
            column="title", min_value=1, max_value=max_title_chars))
        for col in ("advertiser_id", "brand", "category", "selling_points", "item_hash",
                    "content_hash"):
            suite.add_expectation(E.ExpectColumnValuesToNotBeNull(column=col))
    elif table == "ad_queries":
        suite.add_expectation(E.ExpectCompoundColumnsToBeUnique(column_list=["ad_id", "query"]))
        suite.add_expectation(E.ExpectColumnValuesToBeBetween(
            column="query_rank", min_value=1, max_value=top_queries))
        suite.add_expectation(E.ExpectColumnValuesToBeBetween(column="clicks", min_value=1))
    elif table == "quarantine":
        suite.add_expectation(E.ExpectColumnValuesToNotBeNull(column="reason"))
        suite.add_expectation(E.ExpectColumnValuesToBeInSet(
            column="source_table", value_set=["ads", "clicks"]))
    else:
        raise ValueError(f"no feature suite for table {table!r}")
    return suite


@dataclass
class Failure:
    table: str
    expectation: str
    column: str | None
    unexpected: int | None
    rows: int | None
    name: str | None = None  # the expectation's `meta["name"]`, where a suite gives one

    def __str__(self) -> str:
        where = f"{self.table}.{self.column}" if self.column else self.table
        count = "" if self.unexpected is None else f": {self.unexpected:,} of {self.rows:,} rows"
        named = f" ({self.name})" if self.name else ""
        return f"{self.expectation}{named} on {where}{count}"


class SuiteRunner:
    """One ephemeral GX context (no files, no analytics) for a stage's validations."""

    def __init__(self) -> None:
        gx = _gx()
        from great_expectations.data_context.types.base import (
            DataContextConfig,
            InMemoryStoreBackendDefaults,
            ProgressBarsConfig,
        )

        config = DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(),
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False),
        )
        self.context = gx.get_context(mode="ephemeral", project_config=config)
        self.source = self.context.data_sources.add_spark(name="stage")
        self.results: dict[str, dict[str, Any]] = {}

    def validate(self, table: str, df: DataFrame, suite) -> list[Failure]:
        asset = self.source.add_dataframe_asset(name=suite.name)
        batch_def = asset.add_batch_definition_whole_dataframe(name=suite.name)
        suite = self.context.suites.add(suite)
        result = batch_def.get_batch(batch_parameters={"dataframe": df}).validate(suite)
        failures = []
        for r in result.results:
            if r.success:
                continue
            if r.exception_info and r.exception_info.get("raised_exception"):
                raise RuntimeError(  # a broken expectation is a bug, not bad data
                    f"expectation {r.expectation_config.type} on {table} raised: "
                    f"{r.exception_info.get('exception_message')}")
            res = r.result or {}
            failures.append(Failure(
                table=table,
                expectation=r.expectation_config.type,
                column=r.expectation_config.kwargs.get("column"),
                unexpected=res.get("unexpected_count"),
                rows=res.get("element_count", res.get("observed_value")),
                name=(r.expectation_config.meta or {}).get("name"),
            ))
        self.results[suite.name] = {
            "success": result.success,
            "evaluated": len(result.results),
            "failed": [str(f) for f in failures],
        }
        return failures


def quarantine_gate(counts: dict[str, dict[str, Any]], threshold: float) -> list[str]:
    """Tables whose quarantined share passes `threshold`, with their top reasons."""
    problems = []
    for table, c in counts.items():
        rows, bad = c["rows_in"], c["quarantined"]
        if rows and bad / rows > threshold:
            top = sorted(c["reasons"].items(), key=lambda kv: (-kv[1], kv[0]))[:3]
            rules = ", ".join(f"{r}={n:,}" for r, n in top)
            problems.append(
                f"table {table}: {bad:,} of {rows:,} rows quarantined "
                f"({bad / rows:.1%} > threshold {threshold:.1%}); rules: {rules}")
    return problems


def raise_if_failed(stage: str, problems: list[str], failures: list[Failure], where: str) -> None:
    if not problems and not failures:
        return
    lines = problems + [f"expectation failed: {f}" for f in failures]
    raise DataQualityError(f"{stage} failed validation: " + "; ".join(lines) + f". See {where}")
