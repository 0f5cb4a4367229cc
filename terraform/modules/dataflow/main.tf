# The pipeline's container image repository and the streaming Dataflow job that runs the Flex Template.
#
# `lakehouse deploy` builds the image (pipelines/flex_template/Dockerfile), pushes it here, writes the
# template spec to the Dataflow bucket and applies this module with stream_template_gcs_path and
# stream_image set; until then the job is not created. A new template path updates the running job in
# place; destroying it drains the job, so no event in flight is lost.

resource "google_artifact_registry_repository" "images" {
  # checkov:skip=CKV_GCP_84: Google-managed encryption at rest; the image holds only this open-source code
  project       = var.project_id
  location      = var.region
  repository_id = "${var.name_prefix}-images"
  format        = "DOCKER"
  description   = "Container images of the lakehouse pipelines (Flex Template launcher and Dataflow workers)."
  labels        = var.labels

  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"
    most_recent_versions {
      keep_count = 10
    }
  }
}

resource "google_artifact_registry_repository_iam_member" "workers_pull" {
  project    = var.project_id
  location   = var.region
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.reader"
  member     = "serviceAccount:${var.service_account_email}"
}

resource "google_dataflow_flex_template_job" "stream" {
  count    = var.template_gcs_path == "" ? 0 : 1
  provider = google-beta

  project                 = var.project_id
  region                  = var.region
  name                    = "${var.name_prefix}-stream"
  container_spec_gcs_path = var.template_gcs_path
  sdk_container_image     = var.image
  service_account_email   = var.service_account_email
  temp_location           = "gs://${var.dataflow_bucket}/dataflow/tmp"
  staging_location        = "gs://${var.dataflow_bucket}/dataflow/staging"
  subnetwork              = var.subnetwork
  ip_configuration        = "WORKER_IP_PRIVATE"
  enable_streaming_engine = true
  machine_type            = var.machine_type
  max_workers             = var.max_workers
  on_delete               = "drain"
  labels                  = var.labels

  # The settings (subscription, topics, datasets, windows) and `lakehouse stream` options, named as in
  # pipelines/flex_template/metadata.json (checked by tests/test_terraform.py).
  parameters = merge(var.settings, {
    command = "stream"
    dims    = var.dims_uri
  })

  depends_on = [google_artifact_registry_repository_iam_member.workers_pull]
}
