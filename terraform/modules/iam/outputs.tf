output "dataflow_service_account" {
  description = "Email of the Dataflow workers' service account."
  value       = google_service_account.dataflow.email
}

output "composer_service_account" {
  description = "Email of the Composer environment's service account."
  value       = google_service_account.composer.email
}
