variable "project_id" {
  type        = string
  description = "Project of the alert policies."
}

variable "name_prefix" {
  type        = string
  description = "Prefix of the policy names."
}

variable "labels" {
  type        = map(string)
  description = "User labels of the policies."
}

variable "alert_email" {
  type        = string
  description = "Email that receives alerts; empty: no channel."
}

variable "events_topic" {
  type        = string
  description = "Short name of the events topic."
}

variable "dead_letter_topic" {
  type        = string
  description = "Short name of the dead-letter topic."
}

variable "events_subscription" {
  type        = string
  description = "Short name of the stream's subscription."
}

variable "stream_job_name" {
  type        = string
  description = "Name of the streaming Dataflow job."
}

variable "composer_enabled" {
  type        = bool
  description = "Whether a Composer environment exists (DAG failure alert)."
}

variable "composer_environment" {
  type        = string
  description = "Name of the Composer environment."
}

variable "max_dead_letter_ratio" {
  type        = number
  description = "Dead letters / published events that triggers the alert."
}

variable "max_stream_lag_seconds" {
  type        = number
  description = "System lag, watermark age and backlog age that trigger alerts."
}
