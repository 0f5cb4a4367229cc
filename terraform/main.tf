# The demand-forecasting lakehouse on one Google Cloud project.
#
#   cp terraform.tfvars.example terraform.tfvars     # set project_id (and region)
#   terraform init && terraform apply                # buckets, Pub/Sub, BigQuery, IAM, Composer, alerts
#   lakehouse deploy                                 # image, Flex Template, streaming job, DAGs, dbt
#
# Names and defaults follow pipelines/config.py; the BigQuery tables come from schemas/bigquery/, which
# `lakehouse schemas` generates from the event contract. See README "Deploy to Google Cloud".

locals {
  apis = toset([
    "artifactregistry.googleapis.com",
    "bigquery.googleapis.com",
    "cloudbuild.googleapis.com",
    "composer.googleapis.com",
    "compute.googleapis.com",
    "dataflow.googleapis.com",
    "iam.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com",
    "pubsub.googleapis.com",
    "storage.googleapis.com",
  ])

  archive_prefix = "archive/events/"

  # pipelines.config.Settings as the deployed jobs see them: Composer gets them as LAKEHOUSE_* environment
  # variables, the streaming job as template parameters (field name -> value).
  settings = {
    environment              = "gcp"
    gcp_project              = var.project_id
    gcp_region               = var.region
    gcs_bucket               = module.storage.dataflow_bucket
    bronze_dataset           = module.bigquery.datasets["bronze"]
    silver_dataset           = module.bigquery.datasets["silver"]
    gold_dataset             = module.bigquery.datasets["gold"]
    ml_dataset               = module.bigquery.datasets["ml"]
    staging_dataset          = module.bigquery.datasets["staging"]
    events_topic             = var.events_topic
    events_subscription      = var.events_subscription
    dead_letter_topic        = var.dead_letter_topic
    dead_letter_subscription = var.dead_letter_subscription
    stream_window_seconds    = tostring(var.stream_window_seconds)
    allowed_lateness_seconds = tostring(var.allowed_lateness_seconds)
  }
  # The DAGs also need what only their own Dataflow launches use: the landing bucket they backfill from, the
  # template `lakehouse deploy` built, and the workers' service account and subnetwork. Unset ones are left out.
  composer_settings = merge(local.settings, {
    landing_uri              = "gs://${module.storage.landing_bucket}"
    flex_template_path       = var.stream_template_gcs_path
    dataflow_service_account = module.iam.dataflow_service_account
    dataflow_subnetwork      = var.dataflow_subnetwork == null ? "" : var.dataflow_subnetwork
  })
  lakehouse_env = { for k, v in local.composer_settings : "LAKEHOUSE_${upper(k)}" => v if v != "" }
}

resource "google_project_service" "this" {
  for_each           = local.apis
  project            = var.project_id
  service            = each.value
  disable_on_destroy = false # other workloads of the project may use them
}

module "storage" {
  source = "./modules/storage"

  project_id                  = var.project_id
  region                      = var.region
  name_prefix                 = var.name_prefix
  labels                      = var.labels
  archive_prefix              = local.archive_prefix
  archive_nearline_after_days = var.archive_nearline_after_days
  temp_retention_days         = var.temp_retention_days
  force_destroy               = var.force_destroy_buckets

  depends_on = [google_project_service.this]
}

module "bigquery" {
  source = "./modules/bigquery"

  project_id                = var.project_id
  location                  = var.region
  datasets                  = var.datasets
  schema_dir                = "${path.module}/../schemas/bigquery"
  partition_expiration_days = var.partition_expiration_days
  deletion_protection       = var.deletion_protection
  labels                    = var.labels

  depends_on = [google_project_service.this]
}

module "pubsub" {
  source = "./modules/pubsub"

  project_id            = var.project_id
  events_topic          = var.events_topic
  events_subscription   = var.events_subscription
  dead_letter_topic     = var.dead_letter_topic
  dead_letter_sub       = var.dead_letter_subscription
  max_delivery_attempts = var.max_delivery_attempts
  message_retention     = var.message_retention
  landing_bucket        = module.storage.landing_bucket
  archive_prefix        = local.archive_prefix
  archive_max_duration  = var.archive_max_duration
  labels                = var.labels

  depends_on = [google_project_service.this]
}

module "iam" {
  source = "./modules/iam"

  project_id          = var.project_id
  name_prefix         = var.name_prefix
  datasets            = module.bigquery.datasets
  landing_bucket      = module.storage.landing_bucket
  dataflow_bucket     = module.storage.dataflow_bucket
  composer_bucket     = module.storage.composer_bucket
  events_subscription = module.pubsub.events_subscription
  dead_letter_topic   = module.pubsub.dead_letter_topic

  depends_on = [google_project_service.this]
}

module "dataflow" {
  source = "./modules/dataflow"

  project_id            = var.project_id
  region                = var.region
  name_prefix           = var.name_prefix
  labels                = var.labels
  template_gcs_path     = var.stream_template_gcs_path
  image                 = var.stream_image
  service_account_email = module.iam.dataflow_service_account
  dataflow_bucket       = module.storage.dataflow_bucket
  subnetwork            = var.dataflow_subnetwork
  machine_type          = var.dataflow_machine_type
  max_workers           = var.dataflow_max_workers
  dims_uri              = "gs://${module.storage.landing_bucket}/dims"
  settings              = local.settings

  depends_on = [module.iam]
}

module "composer" {
  source = "./modules/composer"

  enabled               = var.composer_enabled
  project_id            = var.project_id
  region                = var.region
  name_prefix           = var.name_prefix
  labels                = var.labels
  bucket                = module.storage.composer_bucket
  image_version         = var.composer_image_version
  environment_size      = var.composer_environment_size
  service_account_email = module.iam.composer_service_account
  env_variables         = local.lakehouse_env

  depends_on = [module.iam]
}

module "monitoring" {
  source = "./modules/monitoring"

  project_id             = var.project_id
  name_prefix            = var.name_prefix
  labels                 = var.labels
  alert_email            = var.alert_email
  events_topic           = var.events_topic
  dead_letter_topic      = var.dead_letter_topic
  events_subscription    = var.events_subscription
  stream_job_name        = module.dataflow.stream_job_name
  composer_enabled       = var.composer_enabled
  composer_environment   = "${var.name_prefix}-composer"
  max_dead_letter_ratio  = var.max_dead_letter_ratio
  max_stream_lag_seconds = var.max_stream_lag_seconds

  depends_on = [google_project_service.this]
}
