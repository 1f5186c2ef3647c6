"""A Spark session configured from the one config (master, memory, partitions)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from jobs.platform.config import Config

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def spark_session(cfg: Config, app: str = "creative-factory") -> SparkSession:
    # pyspark is imported here, not at module level: DAG files import jobs.* cheaply.
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", os.sys.executable)
    builder = (
        SparkSession.builder.appName(app)
        .master(cfg.spark.master)
        .config("spark.driver.memory", cfg.spark.driver_memory)
        .config("spark.sql.shuffle.partitions", str(cfg.spark.shuffle_partitions))
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.ansi.enabled", "true")
        .config("spark.sql.parquet.compression.codec", "zstd")
        .config("spark.driver.extraJavaOptions", "-Dlog4j2.level=ERROR")
    )
    for key, value in cfg.spark.extra_conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark
