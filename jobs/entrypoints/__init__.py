"""Entry points: the CLI, Airflow tasks and callbacks, run-cycle, spark-submit."""
