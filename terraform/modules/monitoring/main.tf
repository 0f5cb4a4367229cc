# Alert policies: dead-letter rate, the stream's freshness (system lag, watermark age, backlog age)
# and failed DAG runs, sent to an optional email channel.

resource "google_monitoring_notification_channel" "email" {
  count        = var.alert_email == "" ? 0 : 1
  project      = var.project_id
  display_name = "${var.name_prefix} alerts"
  type         = "email"
  labels = {
    email_address = var.alert_email
  }
}

locals {
  channels = google_monitoring_notification_channel.email[*].id
  job      = "resource.type = \"dataflow_job\" AND resource.labels.job_name = \"${var.stream_job_name}\""
  # Freshness of the stream, each alerting when above max_stream_lag_seconds for 5 minutes (one slow
  # minute is not an incident).
  freshness = {
    system-lag = {
      name   = "Stream system lag"
      filter = "metric.type = \"dataflow.googleapis.com/job/system_lag\" AND ${local.job}"
      doc    = "The streaming job holds events longer than the threshold: workers are saturated or stuck. Check the job's autoscaling and errors in Dataflow."
    }
    watermark-age = {
      name   = "Stream data freshness (watermark age)"
      filter = "metric.type = \"dataflow.googleapis.com/job/data_watermark_age\" AND ${local.job}"
      doc    = "The stream's event-time watermark lags: windows close late and silver/gold are stale. Check the job's backlog, and whether producers send far-late events."
    }
    backlog-age = {
      name   = "Oldest unacked event on ${var.events_subscription}"
      filter = "metric.type = \"pubsub.googleapis.com/subscription/oldest_unacked_message_age\" AND resource.type = \"pubsub_subscription\" AND resource.labels.subscription_id = \"${var.events_subscription}\""
      doc    = "Events wait in the stream's subscription: the streaming job is stopped, failing or too small. `lakehouse deploy` restarts it; the archive in the landing bucket lets a backfill repair any gap."
    }
  }
}

resource "google_monitoring_alert_policy" "dead_letter_rate" {
  project               = var.project_id
  display_name          = "${var.name_prefix}: dead-letter rate above ${var.max_dead_letter_ratio * 100}%"
  combiner              = "OR"
  notification_channels = local.channels
  user_labels           = var.labels

  conditions {
    display_name = "dead letters / published events over 10 minutes"
    condition_prometheus_query_language {
      query               = <<-EOT
        sum(rate(pubsub_googleapis_com:topic_send_message_operation_count{monitored_resource="pubsub_topic",topic_id="${var.dead_letter_topic}"}[10m]))
          / sum(rate(pubsub_googleapis_com:topic_send_message_operation_count{monitored_resource="pubsub_topic",topic_id="${var.events_topic}"}[10m]))
          > ${var.max_dead_letter_ratio}
      EOT
      duration            = "300s"
      evaluation_interval = "60s"
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "More than ${var.max_dead_letter_ratio * 100}% of events end as dead letters. Query `bronze.dead_letter` by stage and reason to see what producers send wrong; the dead-letter subscription holds the raw messages."
  }
}

resource "google_monitoring_alert_policy" "stream_freshness" {
  for_each              = local.freshness
  project               = var.project_id
  display_name          = "${var.name_prefix}: ${each.value.name} above ${var.max_stream_lag_seconds}s"
  combiner              = "OR"
  notification_channels = local.channels
  user_labels           = var.labels

  conditions {
    display_name = "${each.value.name} > ${var.max_stream_lag_seconds}s for 5 minutes"
    condition_threshold {
      filter          = each.value.filter
      comparison      = "COMPARISON_GT"
      threshold_value = var.max_stream_lag_seconds
      duration        = "300s"
      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = each.value.doc
  }
}

resource "google_monitoring_alert_policy" "dag_failures" {
  count                 = var.composer_enabled ? 1 : 0
  project               = var.project_id
  display_name          = "${var.name_prefix}: a DAG run failed"
  combiner              = "OR"
  notification_channels = local.channels
  user_labels           = var.labels

  conditions {
    display_name = "failed DAG runs in ${var.composer_environment}"
    condition_threshold {
      filter          = "metric.type = \"composer.googleapis.com/workflow/run_count\" AND resource.type = \"cloud_composer_workflow\" AND resource.labels.environment_name = \"${var.composer_environment}\" AND metric.labels.state = \"failed\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["resource.labels.workflow_name"]
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "A DAG run failed after its retries. Open the Airflow UI (terraform output airflow_uri) and read the failed task's log."
  }
}
