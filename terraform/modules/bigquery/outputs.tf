output "datasets" {
  description = "Dataset id per layer."
  value       = { for layer, dataset in google_bigquery_dataset.this : layer => dataset.dataset_id }
}

output "dataset_ids" {
  description = "Full dataset resource ids per layer (for dataset-level IAM)."
  value       = { for layer, dataset in google_bigquery_dataset.this : layer => dataset.id }
}

output "tables" {
  description = "Table fqn (layer.table) -> project:dataset.table, as the Beam sink addresses it."
  value       = { for fqn, table in google_bigquery_table.this : fqn => "${table.project}:${table.dataset_id}.${table.table_id}" }
}
