"""What the DAG tasks call: a thin layer between Airflow's context and the stage functions.

Kept apart from `dags/` so the DAG files only wire tasks, and cheap to import (no
pyspark/torch at module level). Bad data and bad config raise `AirflowFailException`
with the one-line message: a retry cannot fix them, and on-call reads the reason first.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from jobs.errors import UserError

log = logging.getLogger(__name__)


def _fail_fast(exc: UserError):
    from airflow.sdk.exceptions import AirflowFailException

    log.error("%s", exc)  # the one line on-call needs, before Airflow's own failure report
    return AirflowFailException(str(exc))


def extract_features_task(data_interval_end: datetime, force: bool = False) -> dict[str, Any]:
    """Run stage 1 for the cycle of this data interval; return a pointer, not a payload."""
    from jobs import extract_features
    from jobs.config import load_config
    from jobs.lake import cycle_id_for

    try:
        if data_interval_end is None:
            raise UserError("this run has no data interval; trigger it with a logical date")
        cycle_id = cycle_id_for(data_interval_end)
        manifest = extract_features.run(load_config(), cycle_id, force=force)
    except UserError as exc:
        raise _fail_fast(exc) from None
    stage_path = manifest["path"]
    log.info("extract_features %s: %s (%s)", "skipped" if manifest["skipped"] else "done",
             stage_path, {k: v["rows"] for k, v in manifest["outputs"].items()})
    return {
        "cycle_id": cycle_id,
        "stage_path": stage_path,
        "skipped": manifest["skipped"],
        "rows": {k: v["rows"] for k, v in manifest["outputs"].items()},
    }
