output "events_topic" {
  description = "Full id of the events topic (projects/P/topics/T)."
  value       = google_pubsub_topic.events.id
}

output "events_subscription" {
  description = "Full id of the stream's subscription (projects/P/subscriptions/S)."
  value       = google_pubsub_subscription.stream.id
}

output "dead_letter_topic" {
  description = "Full id of the dead-letter topic."
  value       = google_pubsub_topic.dead_letter.id
}

output "dead_letter_subscription" {
  description = "Full id of the subscription on the dead-letter topic (inspect or replay dead letters)."
  value       = google_pubsub_subscription.dead_letter.id
}

output "archive_subscription" {
  description = "Full id of the Cloud Storage subscription that archives raw events."
  value       = google_pubsub_subscription.archive.id
}

output "topic_names" {
  description = "Short names of the events and dead-letter topics (for monitoring filters)."
  value       = { events = google_pubsub_topic.events.name, dead_letter = google_pubsub_topic.dead_letter.name }
}
