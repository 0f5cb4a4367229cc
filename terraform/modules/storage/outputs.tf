output "landing_bucket" {
  description = "Name of the landing bucket (raw event archive, dimension files)."
  value       = google_storage_bucket.this["landing"].name
}

output "dataflow_bucket" {
  description = "Name of the Dataflow staging/temp bucket (also holds the Flex Template specs)."
  value       = google_storage_bucket.this["dataflow"].name
}

output "composer_bucket" {
  description = "Name of the bucket the Composer environment uses for DAGs, plugins and data."
  value       = google_storage_bucket.this["composer"].name
}
