# The MLflow tracking server, successor of the original mlflowbuild.sh, without its plaintext
# passwords: PostgreSQL on Cloud SQL (private IP only), the password generated here and kept in
# Secret Manager (read by the server at start), artifacts in a bucket, the server on a VM with a
# static internal address reachable by the trainers, and by users only through IAP.

locals {
  iap_range = "35.235.240.0/20" # Google's IAP TCP forwarding range
}

resource "google_compute_global_address" "private_services" {
  project       = var.project_id
  name          = "${var.prefix}-private-services"
  purpose       = "VPC_PEERING"
  address_type  = "INTERNAL"
  prefix_length = 20
  network       = var.network
}

resource "google_service_networking_connection" "private_services" {
  network                 = var.network
  service                 = "servicenetworking.googleapis.com"
  reserved_peering_ranges = [google_compute_global_address.private_services.name]
}

resource "google_sql_database_instance" "mlflow" {
  #checkov:skip=CKV_GCP_6:ssl_mode ENCRYPTED_ONLY enforces TLS on every connection; client certificates are not used because the instance has only a private address, reachable from the VPC.
  project             = var.project_id
  name                = "${var.prefix}-mlflow"
  region              = var.region
  database_version    = "POSTGRES_18"
  deletion_protection = var.protect_data
  settings {
    tier              = var.db_tier
    availability_type = "ZONAL"
    user_labels       = var.labels
    ip_configuration {
      ipv4_enabled    = false
      private_network = var.network
      ssl_mode        = "ENCRYPTED_ONLY"
    }
    backup_configuration {
      enabled                        = true
      point_in_time_recovery_enabled = true
    }
    database_flags {
      name  = "log_connections"
      value = "on"
    }
    database_flags {
      name  = "log_disconnections"
      value = "on"
    }
    database_flags {
      name  = "log_checkpoints"
      value = "on"
    }
    database_flags {
      name  = "log_lock_waits"
      value = "on"
    }
    database_flags {
      name  = "log_min_messages"
      value = "error"
    }
    database_flags {
      name  = "log_min_error_statement"
      value = "error"
    }
    database_flags {
      name  = "log_min_duration_statement"
      value = "-1"
    }
    database_flags {
      name  = "log_temp_files"
      value = "0"
    }
    database_flags {
      name  = "cloudsql.enable_pgaudit"
      value = "on"
    }
    database_flags {
      name  = "log_statement"
      value = "ddl"
    }
    database_flags {
      name  = "log_hostname"
      value = "on"
    }
    database_flags {
      name  = "log_duration"
      value = "on"
    }
  }
  depends_on = [google_service_networking_connection.private_services]
}

resource "google_sql_database" "mlflow" {
  project  = var.project_id
  instance = google_sql_database_instance.mlflow.name
  name     = "mlflow"
}

resource "random_password" "db" {
  length  = 32
  special = false
}

resource "google_sql_user" "mlflow" {
  project  = var.project_id
  instance = google_sql_database_instance.mlflow.name
  name     = "mlflow"
  password = random_password.db.result
}

resource "google_secret_manager_secret" "db_password" {
  project   = var.project_id
  secret_id = "${var.prefix}-mlflow-db-password"
  labels    = var.labels
  replication {
    auto {}
  }
}

resource "google_secret_manager_secret_version" "db_password" {
  secret      = google_secret_manager_secret.db_password.id
  secret_data = random_password.db.result
}

resource "google_secret_manager_secret_iam_member" "server_reads_password" {
  project   = var.project_id
  secret_id = google_secret_manager_secret.db_password.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${var.service_account}"
}

resource "google_project_iam_member" "sql_client" {
  project = var.project_id
  role    = "roles/cloudsql.client"
  member  = "serviceAccount:${var.service_account}"
}

resource "google_storage_bucket" "artifacts" {
  project                     = var.project_id
  name                        = "${var.project_id}-${var.prefix}-mlflow"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  labels                      = var.labels
  versioning {
    enabled = true
  }
  logging {
    log_bucket = "${var.project_id}-${var.prefix}-access-logs"
  }
}

resource "google_storage_bucket_iam_member" "server_artifacts" {
  bucket = google_storage_bucket.artifacts.name
  role   = "roles/storage.objectUser"
  member = "serviceAccount:${var.service_account}"
}

resource "google_compute_address" "mlflow" {
  project      = var.project_id
  name         = "${var.prefix}-mlflow"
  region       = var.region
  address_type = "INTERNAL"
  subnetwork   = var.subnetwork
}

resource "google_compute_instance" "mlflow" {
  #checkov:skip=CKV_GCP_38:The server's disk holds only the container image; runs and artifacts live in Cloud SQL and a bucket.
  project      = var.project_id
  name         = "${var.prefix}-mlflow"
  zone         = var.zone
  machine_type = var.machine_type
  tags         = ["${var.prefix}-mlflow"]
  labels       = var.labels

  boot_disk {
    initialize_params {
      image = "projects/cos-cloud/global/images/family/cos-stable"
      size  = 20
    }
  }

  network_interface {
    subnetwork = var.subnetwork
    network_ip = google_compute_address.mlflow.address
  }

  service_account {
    email  = var.service_account
    scopes = ["cloud-platform"]
  }

  shielded_instance_config {
    enable_secure_boot          = true
    enable_vtpm                 = true
    enable_integrity_monitoring = true
  }

  metadata = {
    block-project-ssh-keys = "true"
    enable-oslogin         = "TRUE"
    serial-port-enable     = "FALSE"
    google-logging-enabled = "true"
    startup-script = templatefile("${path.module}/startup.sh.tftpl", {
      image    = var.image
      secret   = "${google_secret_manager_secret.db_password.id}/versions/latest"
      db_host  = google_sql_database_instance.mlflow.private_ip_address
      bucket   = "gs://${google_storage_bucket.artifacts.name}/artifacts"
      registry = split("/", var.image)[0]
    })
  }

  allow_stopping_for_update = true
}

resource "google_compute_firewall" "mlflow_clients" {
  project     = var.project_id
  name        = "${var.prefix}-mlflow-from-trainers"
  network     = var.network
  direction   = "INGRESS"
  source_tags = var.client_tags
  target_tags = ["${var.prefix}-mlflow"]
  allow {
    protocol = "tcp"
    ports    = ["5000"]
  }
  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}

resource "google_compute_firewall" "mlflow_iap" {
  project       = var.project_id
  name          = "${var.prefix}-mlflow-from-iap"
  network       = var.network
  direction     = "INGRESS"
  source_ranges = [local.iap_range]
  target_tags   = ["${var.prefix}-mlflow"]
  allow {
    protocol = "tcp"
    ports    = ["5000"]
  }
  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}

# Users open the UI with `gcloud compute start-iap-tunnel`: IAP authenticates them first.
resource "google_iap_tunnel_instance_iam_member" "users" {
  for_each = toset(var.users)
  project  = var.project_id
  zone     = var.zone
  instance = google_compute_instance.mlflow.name
  role     = "roles/iap.tunnelResourceAccessor"
  member   = each.value
}
