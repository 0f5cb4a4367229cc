# BigQuery datasets (one per lakehouse layer) and the tables the pipelines and the forecasting job write.
#
# Tables and schemas are not written here: they come from the JSON files that `lakehouse schemas`
# generates from the event contract (schemas/bigquery/<layer>.<table>.json, indexed by tables.json with
# description, partition column, clustering and writer). A table added to pipelines/tables.py appears
# here on the next apply. The gold tables are built by dbt, so only the gold dataset is created here.

locals {
  index = jsondecode(file("${var.schema_dir}/tables.json"))

  tables = {
    for fqn, spec in local.index : fqn => merge(spec, {
      layer = split(".", fqn)[0]
      name  = split(".", fqn)[1]
      # Partition expiry: the table's own entry, else its layer's, else never.
      expiration_days = lookup(var.partition_expiration_days, fqn, lookup(var.partition_expiration_days, split(".", fqn)[0], null))
    })
  }

  # The contract writes standard SQL type names; the API answers with the legacy names, so the schema is
  # sent in those to keep plans free of spurious diffs. Only the spelling changes.
  legacy_type = { INT64 = "INTEGER", FLOAT64 = "FLOAT", BOOL = "BOOLEAN" }

  descriptions = {
    bronze  = "Raw events that passed the event contract, as received, and dead letters (written by the Beam jobs)."
    silver  = "Clean, deduplicated, enriched events and the product/store dimensions (written by the Beam jobs)."
    gold    = "dbt marts: dimensions, facts, forecast accuracy; what dashboards and Looker Studio read."
    ml      = "Forecasts, forecast runs and backtest metrics (written by the forecasting job)."
    staging = "dbt staging views and intermediate tables (the layer between silver and gold)."
  }
}

resource "google_bigquery_dataset" "this" {
  for_each = var.datasets
  # checkov:skip=CKV_GCP_81: Google-managed encryption at rest; customer-managed keys would add a Cloud KMS key ring this project does not otherwise need

  project                    = var.project_id
  dataset_id                 = each.value
  location                   = var.location
  description                = local.descriptions[each.key]
  delete_contents_on_destroy = !var.deletion_protection
  labels                     = merge(var.labels, { layer = each.key })
}

resource "google_bigquery_table" "this" {
  for_each = local.tables
  # checkov:skip=CKV_GCP_80: Google-managed encryption at rest, as for the datasets (CKV_GCP_81)

  project             = var.project_id
  dataset_id          = google_bigquery_dataset.this[each.value.layer].dataset_id
  table_id            = each.value.name
  description         = each.value.description
  deletion_protection = var.deletion_protection
  labels              = merge(var.labels, { layer = each.value.layer, writer = each.value.writer })

  schema = jsonencode([
    for field in jsondecode(file("${var.schema_dir}/${each.key}.json")) :
    merge(field, { type = lookup(local.legacy_type, field.type, field.type) })
  ])

  clustering = length(each.value.cluster_by) > 0 ? each.value.cluster_by : null

  dynamic "time_partitioning" {
    for_each = each.value.partition_by == null ? [] : [each.value.partition_by]
    content {
      type          = "DAY"
      field         = time_partitioning.value
      expiration_ms = each.value.expiration_days == null ? null : each.value.expiration_days * 86400000
    }
  }
}
