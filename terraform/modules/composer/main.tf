# The Cloud Composer 3 (Airflow 3) environment that runs the DAGs: dbt against BigQuery, the forecast
# fan-out and backfills on Dataflow. Its bucket is the lakehouse's composer bucket, so `lakehouse deploy`
# uploads DAGs (dags/), the project's packages (plugins/, on Airflow's PYTHONPATH) and the dbt project
# (plugins/dbt, beside the packages, mounted at /home/airflow/gcs/plugins/dbt). Python dependencies are installed by
# `lakehouse deploy` from the package's own requirements, so Terraform leaves pypi_packages alone.

resource "google_composer_environment" "this" {
  count   = var.enabled ? 1 : 0
  project = var.project_id
  region  = var.region
  name    = "${var.name_prefix}-composer"
  labels  = var.labels

  storage_config {
    bucket = var.bucket
  }

  config {
    environment_size = var.environment_size

    software_config {
      image_version = var.image_version
      env_variables = var.env_variables
      airflow_config_overrides = {
        "core-dags_are_paused_at_creation" = "True" # a new DAG runs only once someone unpauses it
        "core-load_examples"               = "False"
      }
    }

    node_config {
      service_account = var.service_account_email
    }
  }

  lifecycle {
    ignore_changes = [config[0].software_config[0].pypi_packages]
  }
}
