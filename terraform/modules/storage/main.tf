# Buckets of the lakehouse: the landing bucket (raw event archive from Pub/Sub, dimension files, inputs of
# repair backfills), Dataflow staging/temp (with the Flex Template specs) and the Composer environment's
# bucket (DAGs, the dbt project). All with uniform bucket-level access and public access prevention.

locals {
  buckets = {
    landing = {
      versioning = true # the archive is the source of truth for repair backfills
      purpose    = "landing"
    }
    dataflow = {
      versioning = false # staging, temp and template specs: rebuilt by `lakehouse deploy`
      purpose    = "dataflow"
    }
    composer = {
      versioning = true # DAGs and the dbt project: keep the previous deploy to roll back
      purpose    = "composer"
    }
  }
}

resource "google_storage_bucket" "this" {
  for_each = local.buckets
  # checkov:skip=CKV_GCP_62: usage logs would need a log bucket of their own; where object-level audit is required, turn on Data Access audit logs for storage.googleapis.com instead
  # checkov:skip=CKV_GCP_78: versioning is on where data matters (landing, composer); dataflow holds only rebuildable staging and temp files

  name                        = "${var.project_id}-${var.name_prefix}-${each.key}"
  project                     = var.project_id
  location                    = var.region
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = var.force_destroy
  labels                      = merge(var.labels, { purpose = each.value.purpose })

  versioning {
    enabled = each.value.versioning
  }

  # Noncurrent versions are only a safety net: drop them after 30 days.
  dynamic "lifecycle_rule" {
    for_each = each.value.versioning ? [1] : []
    content {
      condition {
        days_since_noncurrent_time = 30
        with_state                 = "ARCHIVED"
      }
      action {
        type = "Delete"
      }
    }
  }

  # Raw events are read again only by repair backfills: cheaper storage after a month.
  dynamic "lifecycle_rule" {
    for_each = each.key == "landing" ? [1] : []
    content {
      condition {
        age                   = var.archive_nearline_after_days
        matches_prefix        = [var.archive_prefix]
        matches_storage_class = ["STANDARD"]
      }
      action {
        type          = "SetStorageClass"
        storage_class = "NEARLINE"
      }
    }
  }

  # Dataflow temp and staging files are worthless after the job.
  dynamic "lifecycle_rule" {
    for_each = each.key == "dataflow" ? ["dataflow/tmp/", "dataflow/staging/"] : []
    content {
      condition {
        age            = var.temp_retention_days
        matches_prefix = [lifecycle_rule.value]
      }
      action {
        type = "Delete"
      }
    }
  }
}
