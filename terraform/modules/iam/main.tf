# Service accounts for the Dataflow workers and for Composer, each with only the roles its jobs use,
# granted on the narrowest resource that works (subscription, topic, dataset, bucket; project only
# where Google offers nothing narrower). No primitive roles, no keys: both run as attached identities.

data "google_project" "this" {
  project_id = var.project_id
}

resource "google_service_account" "dataflow" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-dataflow"
  display_name = "Lakehouse Dataflow workers"
  description  = "Runs the streaming and backfill Beam jobs and the forecasting fan-out on Dataflow."
}

resource "google_service_account" "composer" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-composer"
  display_name = "Lakehouse Composer"
  description  = "Runs the Airflow DAGs: launches Dataflow jobs and runs dbt against BigQuery."
}

locals {
  dataflow = "serviceAccount:${google_service_account.dataflow.email}"
  composer = "serviceAccount:${google_service_account.composer.email}"

  project_roles = {
    "dataflow-worker"   = { member = local.dataflow, role = "roles/dataflow.worker" }
    "dataflow-jobs"     = { member = local.dataflow, role = "roles/bigquery.jobUser" } # load jobs, forecast queries
    "dataflow-logs"     = { member = local.dataflow, role = "roles/logging.logWriter" }
    "dataflow-metrics"  = { member = local.dataflow, role = "roles/monitoring.metricWriter" }
    "composer-jobs"     = { member = local.composer, role = "roles/bigquery.jobUser" } # dbt queries
    "composer-dataflow" = { member = local.composer, role = google_project_iam_custom_role.dataflow_launcher.id }
  }

  # layer -> role, per identity: the Beam jobs write bronze/silver, the forecast writes ml and reads gold;
  # dbt reads bronze/silver/ml and builds gold.
  dataset_roles = merge(
    { for layer in ["bronze", "silver", "ml"] : "dataflow-${layer}" => { layer = layer, member = local.dataflow, role = "roles/bigquery.dataEditor" } },
    { "dataflow-gold" = { layer = "gold", member = local.dataflow, role = "roles/bigquery.dataViewer" } },
    { for layer in ["bronze", "silver", "ml"] : "composer-${layer}" => { layer = layer, member = local.composer, role = "roles/bigquery.dataViewer" } },
    { for layer in ["gold", "staging"] : "composer-${layer}" => { layer = layer, member = local.composer, role = "roles/bigquery.dataEditor" } },
  )

  bucket_roles = {
    "dataflow-staging" = { bucket = var.dataflow_bucket, member = local.dataflow, role = "roles/storage.objectAdmin" }
    "dataflow-landing" = { bucket = var.landing_bucket, member = local.dataflow, role = "roles/storage.objectViewer" }
    "composer-own"     = { bucket = var.composer_bucket, member = local.composer, role = "roles/storage.objectAdmin" }
    "composer-staging" = { bucket = var.dataflow_bucket, member = local.composer, role = "roles/storage.objectAdmin" }
    "composer-landing" = { bucket = var.landing_bucket, member = local.composer, role = "roles/storage.objectViewer" }
  }
}

resource "google_project_iam_member" "this" {
  for_each = local.project_roles
  project  = var.project_id
  role     = each.value.role
  member   = each.value.member
}

# Composer's documented role for an environment's own account; Google offers no narrower one.
resource "google_project_iam_member" "composer_worker" {
  # checkov:skip=CKV_GCP_49: roles/composer.worker is required on the project for an environment's service account (Composer has no narrower role)
  project = var.project_id
  role    = "roles/composer.worker"
  member  = local.composer
}

# What the DAGs do with Dataflow: launch Flex Templates and Beam jobs, watch and cancel them. Narrower than
# roles/dataflow.developer; the jobs run as the workers' account (serviceAccountUser on that account only).
resource "google_project_iam_custom_role" "dataflow_launcher" {
  project     = var.project_id
  role_id     = "${replace(var.name_prefix, "-", "_")}_dataflow_launcher"
  title       = "Lakehouse Dataflow launcher"
  description = "Launch, watch and cancel the lakehouse's Dataflow jobs."
  permissions = [
    "dataflow.jobs.cancel",
    "dataflow.jobs.create",
    "dataflow.jobs.get",
    "dataflow.jobs.list",
    "dataflow.jobs.updateContents",
    "dataflow.messages.list",
    "dataflow.metrics.get",
  ]
}

resource "google_bigquery_dataset_iam_member" "this" {
  for_each   = local.dataset_roles
  project    = var.project_id
  dataset_id = var.datasets[each.value.layer]
  role       = each.value.role
  member     = each.value.member
}

resource "google_storage_bucket_iam_member" "this" {
  for_each = local.bucket_roles
  bucket   = each.value.bucket
  role     = each.value.role
  member   = each.value.member
}

# The stream reads its subscription (viewer: Dataflow checks the subscription's backlog for its
# watermark) and publishes dead letters.
resource "google_pubsub_subscription_iam_member" "dataflow_reads_events" {
  for_each     = toset(["roles/pubsub.subscriber", "roles/pubsub.viewer"])
  project      = var.project_id
  subscription = var.events_subscription
  role         = each.value
  member       = local.dataflow
}

resource "google_pubsub_topic_iam_member" "dataflow_publishes_dead_letters" {
  project = var.project_id
  topic   = var.dead_letter_topic
  role    = "roles/pubsub.publisher"
  member  = local.dataflow
}

# Composer launches Dataflow jobs that run as the workers' account.
resource "google_service_account_iam_member" "composer_acts_as_dataflow" {
  service_account_id = google_service_account.dataflow.name
  role               = "roles/iam.serviceAccountUser"
  member             = local.composer
}

# Cloud Composer's service agent manages the environment's workloads as the Composer account.
resource "google_service_account_iam_member" "composer_agent" {
  service_account_id = google_service_account.composer.name
  role               = "roles/composer.ServiceAgentV2Ext"
  member             = "serviceAccount:service-${data.google_project.this.number}@cloudcomposer-accounts.iam.gserviceaccount.com"
}
