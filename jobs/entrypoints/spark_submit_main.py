"""Entry point for `spark-submit` (the cycle DAG's `extract_features_submit` task).

    spark-submit --master spark://host:7077 jobs/entrypoints/spark_submit_main.py extract-features \\
        --cycle-id 20261121T200000Z

Runs a `creative-factory` command inside the Spark driver that spark-submit started; the
config comes from CREATIVE_FACTORY_CONFIG / CF__* in the driver's environment, as for
every other task.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from jobs.entrypoints.cli import app

    app(sys.argv[1:], prog_name="creative-factory")
