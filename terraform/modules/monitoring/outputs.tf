output "alert_policies" {
  description = "Names of the alert policies."
  value = concat(
    [google_monitoring_alert_policy.dead_letter_rate.name],
    [for p in google_monitoring_alert_policy.stream_freshness : p.name],
    google_monitoring_alert_policy.dag_failures[*].name,
  )
}
