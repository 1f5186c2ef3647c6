# Least-privilege policies for the library (policies/*.json.tftpl; tests/test_deploy.py renders
# them with `terraform console` and checks them against moto's IAM enforcement).
#   writer (publish_library): put/get/delete objects and list keys under {prefix}/ only.
#   reader (serving):         get {prefix}/LATEST and {prefix}/versions/*, list {prefix}/.
# Neither may delete object versions, change bucket settings or touch other prefixes.

resource "aws_iam_policy" "library_writer" {
  name        = "${var.bucket_name}-writer"
  description = "Publish the creative library under s3://${var.bucket_name}/${var.prefix}/"
  policy = templatefile("${path.module}/policies/library-writer.json.tftpl", {
    bucket_arn = aws_s3_bucket.library.arn
    prefix     = var.prefix
  })
  tags = var.tags
}

resource "aws_iam_policy" "library_reader" {
  name        = "${var.bucket_name}-reader"
  description = "Read the published creative library (LATEST and versions/) under s3://${var.bucket_name}/${var.prefix}/"
  policy = templatefile("${path.module}/policies/library-reader.json.tftpl", {
    bucket_arn = aws_s3_bucket.library.arn
    prefix     = var.prefix
  })
  tags = var.tags
}

# SSE-KMS only: both sides need the key (the writer to encrypt, both to decrypt).
resource "aws_iam_policy" "library_kms" {
  count       = var.kms_key_arn == null ? 0 : 1
  name        = "${var.bucket_name}-kms"
  description = "Use the library's KMS key through S3"
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "LibraryKeyThroughS3"
      Effect    = "Allow"
      Action    = ["kms:Decrypt", "kms:GenerateDataKey"]
      Resource  = var.kms_key_arn
      Condition = { StringEquals = { "kms:ViaService" = "s3.${var.region}.amazonaws.com" } }
    }]
  })
  tags = var.tags
}

resource "aws_iam_role_policy_attachment" "writer" {
  for_each   = toset(var.writer_role_names)
  role       = each.value
  policy_arn = aws_iam_policy.library_writer.arn
}

resource "aws_iam_role_policy_attachment" "reader" {
  for_each   = toset(var.reader_role_names)
  role       = each.value
  policy_arn = aws_iam_policy.library_reader.arn
}

resource "aws_iam_role_policy_attachment" "kms" {
  for_each   = var.kms_key_arn == null ? toset([]) : toset(concat(var.writer_role_names, var.reader_role_names))
  role       = each.value
  policy_arn = aws_iam_policy.library_kms[0].arn
}
