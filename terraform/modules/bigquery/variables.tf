variable "project_id" {
  type        = string
  description = "Project that owns the datasets."
}

variable "location" {
  type        = string
  description = "BigQuery location of the datasets (the region of the Dataflow jobs)."
}

variable "datasets" {
  type        = map(string)
  description = "Dataset id per layer: bronze, silver, gold, ml, staging."
}

variable "schema_dir" {
  type        = string
  description = "Folder with the contract's BigQuery schemas (<layer>.<table>.json) and their index tables.json."
}

variable "partition_expiration_days" {
  type        = map(number)
  description = "Partition expiry in days by table fqn or by layer; tables not covered never expire."
}

variable "deletion_protection" {
  type        = bool
  description = "Refuse to destroy tables (and keep dataset contents on destroy)."
}

variable "labels" {
  type        = map(string)
  description = "Labels for datasets and tables."
}
