"""The platform every stage stands on: config, errors, the lake and its stage runner, S3, Spark, validation, the model registry, devices."""
