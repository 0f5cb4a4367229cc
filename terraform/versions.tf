terraform {
  required_version = ">= 1.5, < 2.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.30, < 8.0"
    }
    # The Flex Template job resource is only in the beta provider.
    google-beta = {
      source  = "hashicorp/google-beta"
      version = ">= 6.30, < 8.0"
    }
  }

  # State in a bucket you create once by hand (see README "Deploy to Google Cloud"); uncomment and
  # `terraform init -backend-config="bucket=<PROJECT>-tfstate"`.
  # backend "gcs" {
  #   prefix = "lakehouse"
  # }
}

provider "google" {
  project = var.project_id
  region  = var.region
}

provider "google-beta" {
  project = var.project_id
  region  = var.region
}
