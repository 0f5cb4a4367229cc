# Inputs of the root module. Defaults match pipelines/config.py (Settings), so the deployed jobs and the
# local ones use the same names; only project_id has no default.

variable "project_id" {
  type        = string
  description = "Google Cloud project id that hosts the lakehouse (must already exist, with billing enabled)."

  validation {
    condition     = can(regex("^[a-z][-a-z0-9]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be 6-30 characters: lowercase letters, digits and hyphens, starting with a letter and not ending with a hyphen (e.g. \"retail-lake-prod\")."
  }
}

variable "region" {
  type        = string
  description = "Region for Dataflow, Composer, Pub/Sub storage, the buckets and the BigQuery datasets (pipelines.config default)."
  default     = "europe-west2"

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+$", var.region))
    error_message = "region must be a Google Cloud region such as \"europe-west2\" or \"us-central1\" (not a zone like \"europe-west2-a\", not a multi-region like \"EU\")."
  }
}

variable "name_prefix" {
  type        = string
  description = "Prefix of every resource name (service accounts, buckets after the project id, the Composer environment, the Dataflow job)."
  default     = "lakehouse"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,14}[a-z0-9]$", var.name_prefix))
    error_message = "name_prefix must be 4-16 characters: lowercase letters, digits and hyphens, starting with a letter (service account ids built from it are limited to 30 characters)."
  }
}

variable "labels" {
  type        = map(string)
  description = "Labels added to every resource that takes labels (cost attribution)."
  default     = { app = "demand-lakehouse" }

  validation {
    condition     = alltrue([for k, v in var.labels : can(regex("^[a-z][a-z0-9_-]{0,62}$", k)) && can(regex("^[a-z0-9_-]{0,63}$", v))])
    error_message = "labels keys must start with a lowercase letter; keys and values may hold lowercase letters, digits, _ and - (at most 63 characters)."
  }
}

# ---- BigQuery -------------------------------------------------------------------------------
variable "datasets" {
  type        = map(string)
  description = "BigQuery dataset id per lakehouse layer (LAKEHOUSE_BRONZE_DATASET, ..._SILVER_, ..._GOLD_, ..._ML_, and ..._STAGING_ for dbt's staging and intermediate models)."
  default     = { bronze = "bronze", silver = "silver", gold = "gold", ml = "ml", staging = "staging" }

  validation {
    condition     = toset(keys(var.datasets)) == toset(["bronze", "silver", "gold", "ml", "staging"])
    error_message = "datasets must name exactly the layers bronze, silver, gold, ml and staging."
  }
  validation {
    condition     = alltrue([for d in values(var.datasets) : can(regex("^[A-Za-z_][A-Za-z0-9_]{0,1023}$", d))])
    error_message = "dataset ids may hold only letters, digits and underscores, and must not start with a digit."
  }
}

variable "partition_expiration_days" {
  type        = map(number)
  description = "Days a table partition is kept, by table (\"bronze.dead_letter\") or by layer (\"bronze\"); the table entry wins. Tables not listed keep their partitions forever. Raw events stay in the landing bucket's archive, so bronze can expire."
  default     = { bronze = 400, "bronze.dead_letter" = 90 }

  validation {
    condition     = alltrue([for days in values(var.partition_expiration_days) : days >= 1])
    error_message = "partition_expiration_days values must be at least 1 day."
  }
}

variable "deletion_protection" {
  type        = bool
  description = "Protect the BigQuery tables from `terraform destroy` (set false before tearing a test project down)."
  default     = true
}

# ---- Pub/Sub --------------------------------------------------------------------------------
variable "events_topic" {
  type        = string
  description = "Topic the producers publish order and inventory events to (LAKEHOUSE_EVENTS_TOPIC)."
  default     = "events"

  validation {
    condition     = can(regex("^[A-Za-z][-A-Za-z0-9_.~+%]{2,254}$", var.events_topic)) && !startswith(var.events_topic, "goog")
    error_message = "events_topic must be 3-255 characters, start with a letter, hold only letters, digits and - _ . ~ + %, and not start with \"goog\"."
  }
}

variable "events_subscription" {
  type        = string
  description = "Subscription the streaming Dataflow job reads (LAKEHOUSE_EVENTS_SUBSCRIPTION)."
  default     = "events-stream"

  validation {
    condition     = can(regex("^[A-Za-z][-A-Za-z0-9_.~+%]{2,254}$", var.events_subscription)) && !startswith(var.events_subscription, "goog")
    error_message = "events_subscription must be 3-255 characters, start with a letter, hold only letters, digits and - _ . ~ + %, and not start with \"goog\"."
  }
}

variable "dead_letter_topic" {
  type        = string
  description = "Topic for dead letters: the stream publishes records that fail the contract, and Pub/Sub forwards messages that exhaust their delivery attempts (LAKEHOUSE_DEAD_LETTER_TOPIC)."
  default     = "events-dead-letter"

  validation {
    condition     = can(regex("^[A-Za-z][-A-Za-z0-9_.~+%]{2,254}$", var.dead_letter_topic)) && !startswith(var.dead_letter_topic, "goog")
    error_message = "dead_letter_topic must be 3-255 characters, start with a letter, hold only letters, digits and - _ . ~ + %, and not start with \"goog\"."
  }
}

variable "dead_letter_subscription" {
  type        = string
  description = "Subscription on the dead-letter topic, to inspect or replay dead letters (LAKEHOUSE_DEAD_LETTER_SUBSCRIPTION)."
  default     = "events-dead-letter-sub"

  validation {
    condition     = can(regex("^[A-Za-z][-A-Za-z0-9_.~+%]{2,254}$", var.dead_letter_subscription)) && !startswith(var.dead_letter_subscription, "goog")
    error_message = "dead_letter_subscription must be 3-255 characters, start with a letter, hold only letters, digits and - _ . ~ + %, and not start with \"goog\"."
  }
}

variable "max_delivery_attempts" {
  type        = number
  description = "Deliveries of one message before Pub/Sub moves it to the dead-letter topic."
  default     = 10

  validation {
    condition     = var.max_delivery_attempts >= 5 && var.max_delivery_attempts <= 100
    error_message = "max_delivery_attempts must be between 5 and 100 (Pub/Sub's limits)."
  }
}

variable "message_retention" {
  type        = string
  description = "How long the subscriptions keep unacknowledged messages (the window for recovering a stopped stream), e.g. \"604800s\"."
  default     = "604800s"

  validation {
    condition     = can(regex("^[0-9]+s$", var.message_retention)) && tonumber(trimsuffix(var.message_retention, "s")) >= 600 && tonumber(trimsuffix(var.message_retention, "s")) <= 604800
    error_message = "message_retention must be seconds with an \"s\" suffix, between 600s and 604800s (7 days)."
  }
}

variable "archive_max_duration" {
  type        = string
  description = "The Cloud Storage subscription starts a new archive file at least this often (60s-600s)."
  default     = "300s"

  validation {
    condition     = can(regex("^[0-9]+s$", var.archive_max_duration)) && tonumber(trimsuffix(var.archive_max_duration, "s")) >= 60 && tonumber(trimsuffix(var.archive_max_duration, "s")) <= 600
    error_message = "archive_max_duration must be between 60s and 600s."
  }
}

# ---- Cloud Storage --------------------------------------------------------------------------
variable "archive_nearline_after_days" {
  type        = number
  description = "Raw event archive objects move to Nearline storage after this many days (they are read only for repair backfills)."
  default     = 30

  validation {
    condition     = var.archive_nearline_after_days >= 1
    error_message = "archive_nearline_after_days must be at least 1."
  }
}

variable "temp_retention_days" {
  type        = number
  description = "Days Dataflow temp/staging objects are kept before deletion."
  default     = 7

  validation {
    condition     = var.temp_retention_days >= 1
    error_message = "temp_retention_days must be at least 1."
  }
}

variable "force_destroy_buckets" {
  type        = bool
  description = "Let `terraform destroy` delete non-empty buckets (only for throwaway projects)."
  default     = false
}

# ---- Dataflow -------------------------------------------------------------------------------
variable "stream_template_gcs_path" {
  type        = string
  description = "gs:// path of the Flex Template spec built by `lakehouse deploy`; empty: the streaming job is not created yet."
  default     = ""

  validation {
    condition     = var.stream_template_gcs_path == "" || can(regex("^gs://[a-z0-9][-a-z0-9_.]{1,220}/.+\\.json$", var.stream_template_gcs_path))
    error_message = "stream_template_gcs_path must be empty or a gs://BUCKET/PATH.json template spec."
  }
}

variable "stream_image" {
  type        = string
  description = "Container image of the pipeline (Artifact Registry URI with tag) that Dataflow workers run; set by `lakehouse deploy`."
  default     = ""
}

variable "dataflow_machine_type" {
  type        = string
  description = "Machine type of the streaming job's workers."
  default     = "n2-standard-2"
}

variable "dataflow_max_workers" {
  type        = number
  description = "Upper bound for the streaming job's autoscaling (the main Dataflow cost driver)."
  default     = 3

  validation {
    condition     = var.dataflow_max_workers >= 1 && var.dataflow_max_workers <= 100
    error_message = "dataflow_max_workers must be between 1 and 100."
  }
}

variable "dataflow_subnetwork" {
  type        = string
  description = "Subnetwork for Dataflow workers (regions/REGION/subnetworks/NAME or a full URL); null: the default network. Workers have no public IP, so the subnetwork needs Private Google Access."
  default     = null
}

variable "stream_window_seconds" {
  type        = number
  description = "Length of the stream's event-time demand windows in seconds (LAKEHOUSE_STREAM_WINDOW_SECONDS)."
  default     = 60

  validation {
    condition     = var.stream_window_seconds >= 1
    error_message = "stream_window_seconds must be at least 1."
  }
}

variable "allowed_lateness_seconds" {
  type        = number
  description = "How late an event may arrive and still update its window; later events are kept in silver, flagged late (LAKEHOUSE_ALLOWED_LATENESS_SECONDS)."
  default     = 300

  validation {
    condition     = var.allowed_lateness_seconds >= 0
    error_message = "allowed_lateness_seconds must not be negative."
  }
}

# ---- Composer -------------------------------------------------------------------------------
variable "composer_enabled" {
  type        = bool
  description = "Create the Cloud Composer environment (the largest fixed cost; switch off to run only the stream)."
  default     = true
}

variable "composer_image_version" {
  type        = string
  description = "Cloud Composer 3 image with Airflow 3 (the DAGs use the Airflow 3 TaskFlow SDK)."
  default     = "composer-3-airflow-3"

  validation {
    condition     = can(regex("^composer-3(\\.[0-9.]+)?-airflow-3", var.composer_image_version))
    error_message = "composer_image_version must be a Composer 3 image with Airflow 3, e.g. \"composer-3-airflow-3\"."
  }
}

variable "composer_environment_size" {
  type        = string
  description = "Composer environment size: ENVIRONMENT_SIZE_SMALL, _MEDIUM or _LARGE."
  default     = "ENVIRONMENT_SIZE_SMALL"

  validation {
    condition     = contains(["ENVIRONMENT_SIZE_SMALL", "ENVIRONMENT_SIZE_MEDIUM", "ENVIRONMENT_SIZE_LARGE"], var.composer_environment_size)
    error_message = "composer_environment_size must be ENVIRONMENT_SIZE_SMALL, ENVIRONMENT_SIZE_MEDIUM or ENVIRONMENT_SIZE_LARGE."
  }
}

# ---- Monitoring -----------------------------------------------------------------------------
variable "alert_email" {
  type        = string
  description = "Email address that receives alerts; empty: alert policies exist without a notification channel."
  default     = ""

  validation {
    condition     = var.alert_email == "" || can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", var.alert_email))
    error_message = "alert_email must be empty or an email address."
  }
}

variable "max_dead_letter_ratio" {
  type        = number
  description = "Alert when dead letters exceed this share of published events over 10 minutes."
  default     = 0.01

  validation {
    condition     = var.max_dead_letter_ratio > 0 && var.max_dead_letter_ratio < 1
    error_message = "max_dead_letter_ratio must be between 0 and 1."
  }
}

variable "max_stream_lag_seconds" {
  type        = number
  description = "Alert when the stream's system lag or data watermark age stays above this for 5 minutes."
  default     = 300

  validation {
    condition     = var.max_stream_lag_seconds >= 30
    error_message = "max_stream_lag_seconds must be at least 30."
  }
}
