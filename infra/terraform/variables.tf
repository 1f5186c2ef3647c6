variable "region" {
  description = "AWS region of the library bucket."
  type        = string
  default     = "us-east-1"
}

variable "bucket_name" {
  description = "Name of the creative-library bucket (library.bucket in the project config)."
  type        = string
}

variable "prefix" {
  description = "Key prefix of the library (library.prefix): versions/ and LATEST live under it."
  type        = string
  default     = "creative-factory"

  validation {
    condition     = length(var.prefix) > 0 && !startswith(var.prefix, "/") && !endswith(var.prefix, "/")
    error_message = "prefix must be non-empty, without a leading or trailing slash."
  }
}

variable "noncurrent_version_days" {
  description = "Days an overwritten or deleted object version is kept (recovery window) before it expires."
  type        = number
  default     = 30

  validation {
    condition     = var.noncurrent_version_days >= 1
    error_message = "noncurrent_version_days must be at least 1."
  }
}

variable "noncurrent_versions_kept" {
  description = "Newest noncurrent versions of each key kept regardless of age."
  type        = number
  default     = 3
}

variable "library_version_days" {
  description = <<-EOT
    Days after which objects under {prefix}/versions/ expire. A backstop behind the project's own
    pruning (library.keep_versions): keep it far longer than the time between cycles (5 h), or a
    long publishing outage would expire the version LATEST points to (it stays recoverable for
    noncurrent_version_days).
  EOT
  type        = number
  default     = 90

  validation {
    condition     = var.library_version_days >= 7
    error_message = "library_version_days must be at least 7 (versions are published every 5 hours)."
  }
}

variable "kms_key_arn" {
  description = "KMS key for SSE-KMS; null uses SSE-S3 (AES-256)."
  type        = string
  default     = null
}

variable "writer_role_names" {
  description = "IAM roles that publish the library (the Airflow task pods' role); they get the writer policy."
  type        = list(string)
  default     = []
}

variable "reader_role_names" {
  description = "IAM roles that serve the library (advertiser delivery, serving); they get the reader policy."
  type        = list(string)
  default     = []
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
  default     = { project = "creative-factory" }
}
