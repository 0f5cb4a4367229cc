variable "project_id" {
  type        = string
  description = "Project that owns the buckets; also the first part of each bucket name (globally unique)."
}

variable "region" {
  type        = string
  description = "Location of the buckets (regional, next to Dataflow and Composer)."
}

variable "name_prefix" {
  type        = string
  description = "Middle part of the bucket names: <project>-<prefix>-<landing|dataflow|composer>."
}

variable "labels" {
  type        = map(string)
  description = "Labels for every bucket."
}

variable "archive_prefix" {
  type        = string
  description = "Object prefix under which the Pub/Sub Cloud Storage subscription archives raw events."
}

variable "archive_nearline_after_days" {
  type        = number
  description = "Archive objects move to Nearline after this many days."
}

variable "temp_retention_days" {
  type        = number
  description = "Days Dataflow temp and staging objects are kept."
}

variable "force_destroy" {
  type        = bool
  description = "Allow deleting non-empty buckets on destroy."
}
