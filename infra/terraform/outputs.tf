output "bucket" {
  description = "library.bucket"
  value       = aws_s3_bucket.library.bucket
}

output "prefix" {
  description = "library.prefix"
  value       = var.prefix
}

output "writer_policy_arn" {
  value = aws_iam_policy.library_writer.arn
}

output "reader_policy_arn" {
  value = aws_iam_policy.library_reader.arn
}
