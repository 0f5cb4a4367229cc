output "environment_name" {
  description = "Name of the Composer environment (null when disabled)."
  value       = one(google_composer_environment.this[*].name)
}

output "airflow_uri" {
  description = "URL of the Airflow web UI (null when disabled)."
  value       = one(google_composer_environment.this[*].config[0].airflow_uri)
}
