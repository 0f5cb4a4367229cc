variable "enabled" {
  type        = bool
  description = "Create the environment."
}

variable "project_id" {
  type        = string
  description = "Project of the environment."
}

variable "region" {
  type        = string
  description = "Region of the environment."
}

variable "name_prefix" {
  type        = string
  description = "Prefix of the environment name (<prefix>-composer)."
}

variable "labels" {
  type        = map(string)
  description = "Labels for the environment."
}

variable "bucket" {
  type        = string
  description = "Bucket for DAGs, plugins and data (created by the storage module)."
}

variable "image_version" {
  type        = string
  description = "Composer image (Composer 3 with Airflow 3)."
}

variable "environment_size" {
  type        = string
  description = "ENVIRONMENT_SIZE_SMALL, _MEDIUM or _LARGE."
}

variable "service_account_email" {
  type        = string
  description = "Identity of the Airflow workers."
}

variable "env_variables" {
  type        = map(string)
  description = "Environment variables of the Airflow processes (the LAKEHOUSE_* settings)."
}
