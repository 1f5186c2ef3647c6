# The creative-library bucket (DESIGN.md, "Creative library"):
#   s3://{bucket}/{prefix}/versions/{cycle_id}/...   one folder per published cycle
#   s3://{bucket}/{prefix}/LATEST                    pointer, written last
# Versioning keeps every overwritten LATEST and every pruned version recoverable; lifecycle
# rules bound what that costs.

resource "aws_s3_bucket" "library" {
  bucket = var.bucket_name
  tags   = var.tags
}

resource "aws_s3_bucket_ownership_controls" "library" {
  bucket = aws_s3_bucket.library.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "library" {
  bucket = aws_s3_bucket.library.id

  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "library" {
  bucket = aws_s3_bucket.library.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "library" {
  bucket = aws_s3_bucket.library.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = var.kms_key_arn == null ? "AES256" : "aws:kms"
      kms_master_key_id = var.kms_key_arn
    }
    bucket_key_enabled = var.kms_key_arn != null
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "library" {
  bucket = aws_s3_bucket.library.id

  # Lifecycle rules on a versioned bucket need versioning to be in place first.
  depends_on = [aws_s3_bucket_versioning.library]

  # Overwritten LATEST pointers and pruned library versions: kept for a recovery window.
  rule {
    id     = "expire-noncurrent-versions"
    status = "Enabled"

    filter {
      prefix = "${var.prefix}/"
    }

    noncurrent_version_expiration {
      noncurrent_days           = var.noncurrent_version_days
      newer_noncurrent_versions = var.noncurrent_versions_kept
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 2
    }
  }

  # Old published versions: a backstop behind library.keep_versions.
  rule {
    id     = "expire-old-library-versions"
    status = "Enabled"

    filter {
      prefix = "${var.prefix}/versions/"
    }

    expiration {
      days = var.library_version_days
    }
  }

  # Delete markers with no versions left behind them.
  rule {
    id     = "remove-expired-delete-markers"
    status = "Enabled"

    filter {
      prefix = "${var.prefix}/"
    }

    expiration {
      expired_object_delete_marker = true
    }
  }
}

# TLS only, for every principal.
resource "aws_s3_bucket_policy" "library" {
  bucket = aws_s3_bucket.library.id

  # The public access block first, so this policy is never evaluated as a public one.
  depends_on = [aws_s3_bucket_public_access_block.library]

  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "DenyInsecureTransport"
      Effect    = "Deny"
      Principal = "*"
      Action    = "s3:*"
      Resource  = [aws_s3_bucket.library.arn, "${aws_s3_bucket.library.arn}/*"]
      Condition = { Bool = { "aws:SecureTransport" = "false" } }
    }]
  })
}
