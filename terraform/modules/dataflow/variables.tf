variable "project_id" {
  type        = string
  description = "Project that runs the job and owns the image repository."
}

variable "region" {
  type        = string
  description = "Dataflow region (and Artifact Registry location)."
}

variable "name_prefix" {
  type        = string
  description = "Prefix of the job name and the repository id."
}

variable "labels" {
  type        = map(string)
  description = "Labels for the job and the repository."
}

variable "template_gcs_path" {
  type        = string
  description = "gs:// path of the Flex Template spec; empty: no job yet."
}

variable "image" {
  type        = string
  description = "Image URI the workers run (the same image as the template launcher)."
}

variable "service_account_email" {
  type        = string
  description = "Identity of the workers."
}

variable "dataflow_bucket" {
  type        = string
  description = "Bucket for staging and temp files."
}

variable "subnetwork" {
  type        = string
  description = "Subnetwork of the workers (needs Private Google Access); null: default network."
}

variable "machine_type" {
  type        = string
  description = "Worker machine type."
}

variable "max_workers" {
  type        = number
  description = "Autoscaling ceiling."
}

variable "dims_uri" {
  type        = string
  description = "gs:// folder with products.jsonl and stores.jsonl, the stream's enrichment dimensions."
}

variable "settings" {
  type        = map(string)
  description = "Lakehouse settings passed as template parameters (pipelines.config.Settings field -> value)."
}
