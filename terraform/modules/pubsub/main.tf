# The event bus: the events topic, the stream's subscription (dead-letter and retry policies), the
# dead-letter topic with a subscription to inspect or replay it, and a Cloud Storage subscription that
# archives every raw event to the landing bucket (the cloud twin of the local archive that repair
# backfills read: `lakehouse backfill --input <archive_glob>`).

data "google_project" "this" {
  project_id = var.project_id
}

locals {
  # Pub/Sub's service agent forwards dead letters and writes the archive.
  pubsub_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
}

resource "google_pubsub_topic" "events" {
  # checkov:skip=CKV_GCP_83: Google-managed encryption at rest; customer-managed keys would add a Cloud KMS key ring this project does not otherwise need
  project                    = var.project_id
  name                       = var.events_topic
  labels                     = var.labels
  message_retention_duration = var.message_retention
}

resource "google_pubsub_topic" "dead_letter" {
  # checkov:skip=CKV_GCP_83: Google-managed encryption at rest, as for the events topic
  project                    = var.project_id
  name                       = var.dead_letter_topic
  labels                     = var.labels
  message_retention_duration = var.message_retention
}

resource "google_pubsub_subscription" "stream" {
  project = var.project_id
  name    = var.events_subscription
  topic   = google_pubsub_topic.events.id
  labels  = var.labels

  ack_deadline_seconds       = 60
  message_retention_duration = var.message_retention
  retain_acked_messages      = false

  expiration_policy {
    ttl = "" # never expire, even while the stream is stopped
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }

  depends_on = [google_pubsub_topic_iam_member.agent_publishes_dead_letters]
}

resource "google_pubsub_subscription" "dead_letter" {
  project                    = var.project_id
  name                       = var.dead_letter_sub
  topic                      = google_pubsub_topic.dead_letter.id
  labels                     = var.labels
  ack_deadline_seconds       = 60
  message_retention_duration = "604800s"

  expiration_policy {
    ttl = ""
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }
}

resource "google_pubsub_subscription" "archive" {
  project = var.project_id
  name    = "${var.events_topic}-archive"
  topic   = google_pubsub_topic.events.id
  labels  = var.labels

  expiration_policy {
    ttl = ""
  }

  # One message per line, as the producers publish it: the files are JSONL that the backfill reads.
  cloud_storage_config {
    bucket                   = var.landing_bucket
    filename_prefix          = var.archive_prefix
    filename_datetime_format = "YYYY-MM-DD/hh_mm_ssZ"
    filename_suffix          = ".jsonl"
    max_duration             = var.archive_max_duration
    max_bytes                = 100000000
  }

  depends_on = [google_storage_bucket_iam_member.agent_writes_archive, google_storage_bucket_iam_member.agent_reads_archive_bucket]
}

# ---- what Pub/Sub's service agent needs ------------------------------------------------------
resource "google_pubsub_topic_iam_member" "agent_publishes_dead_letters" {
  project = var.project_id
  topic   = google_pubsub_topic.dead_letter.name
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_agent
}

resource "google_pubsub_subscription_iam_member" "agent_forwards_dead_letters" {
  project      = var.project_id
  subscription = google_pubsub_subscription.stream.name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_agent
}

resource "google_storage_bucket_iam_member" "agent_writes_archive" {
  bucket = var.landing_bucket
  role   = "roles/storage.objectCreator"
  member = local.pubsub_agent
}

resource "google_storage_bucket_iam_member" "agent_reads_archive_bucket" {
  bucket = var.landing_bucket
  role   = "roles/storage.legacyBucketReader"
  member = local.pubsub_agent
}
