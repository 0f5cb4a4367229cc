variable "project_id" {
  type        = string
  description = "Project of the service accounts and bindings."
}

variable "name_prefix" {
  type        = string
  description = "Prefix of the service account ids (<prefix>-dataflow, <prefix>-composer)."
}

variable "datasets" {
  type        = map(string)
  description = "Dataset id per layer (bronze, silver, gold, ml, staging)."
}

variable "landing_bucket" {
  type        = string
  description = "Landing bucket name (raw archive, dimension files)."
}

variable "dataflow_bucket" {
  type        = string
  description = "Dataflow staging/temp bucket name."
}

variable "composer_bucket" {
  type        = string
  description = "Composer environment bucket name."
}

variable "events_subscription" {
  type        = string
  description = "Full id of the stream's subscription."
}

variable "dead_letter_topic" {
  type        = string
  description = "Full id of the dead-letter topic."
}
