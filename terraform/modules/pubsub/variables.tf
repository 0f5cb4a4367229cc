variable "project_id" {
  type        = string
  description = "Project that owns the topics and subscriptions."
}

variable "events_topic" {
  type        = string
  description = "Topic the producers publish events to."
}

variable "events_subscription" {
  type        = string
  description = "Subscription the streaming job reads."
}

variable "dead_letter_topic" {
  type        = string
  description = "Topic for dead letters (from the stream and from exhausted deliveries)."
}

variable "dead_letter_sub" {
  type        = string
  description = "Subscription on the dead-letter topic."
}

variable "max_delivery_attempts" {
  type        = number
  description = "Deliveries before a message is forwarded to the dead-letter topic."
}

variable "message_retention" {
  type        = string
  description = "Retention of unacknowledged messages, e.g. 604800s."
}

variable "landing_bucket" {
  type        = string
  description = "Bucket the Cloud Storage subscription archives raw events to."
}

variable "archive_prefix" {
  type        = string
  description = "Object prefix of the archive files in the landing bucket."
}

variable "archive_max_duration" {
  type        = string
  description = "A new archive file is started at least this often."
}

variable "labels" {
  type        = map(string)
  description = "Labels for topics and subscriptions."
}
