# `lakehouse deploy` reads these (terraform output -json): bucket names for uploads, the image
# repository, the Composer environment, and the settings the jobs run with.

output "lakehouse_env" {
  description = "LAKEHOUSE_* settings of the deployed platform (set on Composer; export them to run the CLI against this project)."
  value       = local.lakehouse_env
}

output "template_parameters" {
  description = "Settings passed to the Flex Template as parameters (pipelines.config.Settings field -> value)."
  value       = local.settings
}

output "landing_bucket" {
  description = "Landing bucket: raw event archive (archive/events/) and dimension files."
  value       = module.storage.landing_bucket
}

output "archive_glob" {
  description = "Glob of the archived raw events, for a repair backfill: lakehouse backfill --input <this>."
  value       = "gs://${module.storage.landing_bucket}/${local.archive_prefix}*/*.jsonl"
}

output "dataflow_bucket" {
  description = "Dataflow staging/temp bucket, also holding the Flex Template specs (templates/)."
  value       = module.storage.dataflow_bucket
}

output "composer_bucket" {
  description = "Composer bucket: dags/, plugins/ (the project's packages) and plugins/dbt (the dbt project)."
  value       = module.storage.composer_bucket
}

output "image_repository" {
  description = "Artifact Registry repository for the pipeline image."
  value       = module.dataflow.repository
}

output "stream_job_name" {
  description = "Name of the streaming Dataflow job."
  value       = module.dataflow.stream_job_name
}

output "stream_job_id" {
  description = "Id of the running streaming job (null before `lakehouse deploy`)."
  value       = module.dataflow.stream_job_id
}

output "events_topic" {
  description = "Topic the producers publish to (lakehouse simulate --publish --topic ...)."
  value       = module.pubsub.events_topic
}

output "events_subscription" {
  description = "Subscription the streaming job reads."
  value       = module.pubsub.events_subscription
}

output "dead_letter_topic" {
  description = "Dead-letter topic."
  value       = module.pubsub.dead_letter_topic
}

output "dead_letter_subscription" {
  description = "Subscription on the dead-letter topic, to inspect or replay dead letters."
  value       = module.pubsub.dead_letter_subscription
}

output "bigquery_tables" {
  description = "Tables created from the contract: layer.table -> project:dataset.table."
  value       = module.bigquery.tables
}

output "dataflow_service_account" {
  description = "Service account the Dataflow workers run as."
  value       = module.iam.dataflow_service_account
}

output "composer_service_account" {
  description = "Service account Composer runs as."
  value       = module.iam.composer_service_account
}

output "composer_environment" {
  description = "Name of the Composer environment (null when composer_enabled is false)."
  value       = module.composer.environment_name
}

output "airflow_uri" {
  description = "Airflow web UI of the Composer environment."
  value       = module.composer.airflow_uri
}

output "region" {
  description = "Region of the jobs and the Composer environment."
  value       = var.region
}

output "project_id" {
  description = "Project of the deployment."
  value       = var.project_id
}
