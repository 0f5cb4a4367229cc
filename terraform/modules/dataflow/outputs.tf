output "repository" {
  description = "Docker repository URI for the pipeline image (REGION-docker.pkg.dev/PROJECT/REPO)."
  value       = "${google_artifact_registry_repository.images.location}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}"
}

output "stream_job_name" {
  description = "Name of the streaming job (also when it is not created yet)."
  value       = "${var.name_prefix}-stream"
}

output "stream_job_id" {
  description = "Dataflow job id of the running stream; null until deployed."
  value       = one(google_dataflow_flex_template_job.stream[*].job_id)
}
