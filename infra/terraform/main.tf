# Everything the control plane and the trainers need in one project. See ../README.md to deploy.

locals {
  # One source of truth for message names: sinergym_cloud/names.py (a test checks these match).
  topics = {
    batches     = "experiment-batches"
    ready       = "instance-ready"
    completions = "experiment-completions"
    sweep       = "sweeper-ticks"
  }
  functions = {
    launch   = { topic = "batches", vpc = false }
    dispatch = { topic = "ready", vpc = true }
    cleanup  = { topic = "completions", vpc = false }
    sweeper  = { topic = "sweep", vpc = false }
  }
  labels         = merge({ app = "sinergym" }, var.labels)
  pubsub_agent   = "service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
  results_bucket = coalesce(var.buckets.results, "${var.project_id}-${var.prefix}-results")
  state_bucket   = coalesce(var.buckets.state, "${var.project_id}-${var.prefix}-state")
  registry       = "${var.region}-docker.pkg.dev/${var.project_id}/${var.prefix}"
  trainer_image  = coalesce(var.trainer.image, "${local.registry}/trainer:latest")
  mlflow_image   = coalesce(var.mlflow.image, "${local.registry}/mlflow:latest")
  template_name  = "${var.prefix}-template"
  connector_cidr = "10.8.0.0/28"
  subnet_cidr    = "10.10.0.0/20"
  apis = [
    "artifactregistry.googleapis.com", "cloudbuild.googleapis.com", "cloudfunctions.googleapis.com",
    "cloudscheduler.googleapis.com", "compute.googleapis.com", "iap.googleapis.com",
    "logging.googleapis.com", "monitoring.googleapis.com", "pubsub.googleapis.com", "run.googleapis.com",
    "secretmanager.googleapis.com", "servicenetworking.googleapis.com", "sqladmin.googleapis.com",
    "storage.googleapis.com", "vpcaccess.googleapis.com",
  ]
}

data "google_project" "this" {
  project_id = var.project_id
}

resource "google_project_service" "apis" {
  for_each           = toset(local.apis)
  project            = var.project_id
  service            = each.value
  disable_on_destroy = false
}

# ---------------------------------------------------------------- network
resource "google_compute_network" "vpc" {
  project                 = var.project_id
  name                    = "${var.prefix}-vpc"
  auto_create_subnetworks = false
  depends_on              = [google_project_service.apis]
}

resource "google_compute_subnetwork" "trainers" {
  project                  = var.project_id
  name                     = "${var.prefix}-trainers"
  region                   = var.region
  network                  = google_compute_network.vpc.id
  ip_cidr_range            = local.subnet_cidr
  private_ip_google_access = true # VMs have no external address: Google APIs and the registry via Private Google Access
  log_config {
    aggregation_interval = "INTERVAL_5_MIN"
    flow_sampling        = 0.5
    metadata             = "INCLUDE_ALL_METADATA"
  }
}

# dispatch reaches the VMs' sshd through this connector (its egress is private ranges only).
resource "google_vpc_access_connector" "dispatch" {
  project       = var.project_id
  name          = "${var.prefix}-dispatch"
  region        = var.region
  network       = google_compute_network.vpc.name
  ip_cidr_range = local.connector_cidr
  min_instances = 2
  max_instances = 3
}

resource "google_compute_firewall" "ssh_from_dispatch" {
  project       = var.project_id
  name          = "${var.prefix}-ssh-from-dispatch"
  network       = google_compute_network.vpc.name
  direction     = "INGRESS"
  source_ranges = [local.connector_cidr]
  target_tags   = ["${var.prefix}-trainer"]
  allow {
    protocol = "tcp"
    ports    = ["22"]
  }
  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}

resource "google_compute_router" "nat" {
  project = var.project_id
  name    = "${var.prefix}-router"
  region  = var.region
  network = google_compute_network.vpc.id
}

# Outbound only (pip mirrors, weather files are inside the image; NAT is for OS updates and the image pull fallback).
resource "google_compute_router_nat" "nat" {
  project                            = var.project_id
  name                               = "${var.prefix}-nat"
  router                             = google_compute_router.nat.name
  region                             = var.region
  nat_ip_allocate_option             = "AUTO_ONLY"
  source_subnetwork_ip_ranges_to_nat = "ALL_SUBNETWORKS_ALL_IP_RANGES"
  log_config {
    enable = true
    filter = "ERRORS_ONLY"
  }
}

# ---------------------------------------------------------------- storage
resource "google_storage_bucket" "results" {
  project                     = var.project_id
  name                        = local.results_bucket
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  labels                      = local.labels
  versioning {
    enabled = true
  }
  lifecycle_rule {
    condition {
      age = var.buckets.results_retention_days
    }
    action {
      type = "Delete"
    }
  }
  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 7
    }
    action {
      type = "Delete"
    }
  }
  logging {
    log_bucket = google_storage_bucket.access_logs.name
  }
}

resource "google_storage_bucket" "state" {
  project                     = var.project_id
  name                        = local.state_bucket
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  labels                      = local.labels
  versioning {
    enabled = true
  }
  lifecycle_rule {
    condition {
      age = var.buckets.state_retention_days
    }
    action {
      type = "Delete"
    }
  }
  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 30
    }
    action {
      type = "Delete"
    }
  }
  logging {
    log_bucket = google_storage_bucket.access_logs.name
  }
}

resource "google_storage_bucket" "functions_source" {
  project                     = var.project_id
  name                        = "${var.project_id}-${var.prefix}-functions"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  labels                      = local.labels
  versioning {
    enabled = true
  }
  logging {
    log_bucket = google_storage_bucket.access_logs.name
  }
}

resource "google_storage_bucket" "access_logs" {
  #checkov:skip=CKV_GCP_62:This is the access-log bucket itself; logging it into itself would loop.
  project                     = var.project_id
  name                        = "${var.project_id}-${var.prefix}-access-logs"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  labels                      = local.labels
  versioning {
    enabled = true
  }
  lifecycle_rule {
    condition {
      age = 90
    }
    action {
      type = "Delete"
    }
  }
}

resource "google_artifact_registry_repository" "images" {
  #checkov:skip=CKV_GCP_84:Google-managed encryption at rest; customer keys would add a KMS key ring to run for container images that hold no data or secret.
  project       = var.project_id
  location      = var.region
  repository_id = var.prefix
  format        = "DOCKER"
  description   = "Trainer and MLflow images."
  labels        = local.labels
  depends_on    = [google_project_service.apis]
}

# ---------------------------------------------------------------- the SSH key of dispatch
# Only the secret's container is here; its value is added out of band (infra/README.md) so that
# the private key never sits in Terraform state.
resource "google_secret_manager_secret" "ssh_key" {
  project   = var.project_id
  secret_id = "${var.prefix}-dispatch-ssh-key"
  labels    = local.labels
  replication {
    auto {}
  }
  depends_on = [google_project_service.apis]
}

# The deployment secret of the control plane (signing.py): 32+ random bytes, added out of band like
# the SSH key (infra/README.md), so it never sits in Terraform state. Rotate it between batches: a
# running boot's completion key is derived from the version that dispatched it.
resource "google_secret_manager_secret" "control_secret" {
  project   = var.project_id
  secret_id = "${var.prefix}-control-secret"
  labels    = local.labels
  replication {
    auto {}
  }
  depends_on = [google_project_service.apis]
}

# The W&B API key of experiments that log to Weights & Biases (Sinergym's WandBLogger): the same
# out-of-band pattern. Only the trainer's service account may read it (iam.tf); without a version,
# trainers log W&B offline into their outputs.
resource "google_secret_manager_secret" "wandb_api_key" {
  project   = var.project_id
  secret_id = "${var.prefix}-wandb-api-key"
  labels    = local.labels
  replication {
    auto {}
  }
  depends_on = [google_project_service.apis]
}

# ---------------------------------------------------------------- Pub/Sub
module "topics" {
  source            = "./modules/pubsub-topic"
  for_each          = local.topics
  project_id        = var.project_id
  name              = each.value
  labels            = local.labels
  pubsub_agent      = local.pubsub_agent
  retention_seconds = 604800
  depends_on        = [google_project_service.apis]
}

# ---------------------------------------------------------------- the trainer VMs
module "trainer_vm" {
  source          = "./modules/trainer-vm"
  project_id      = var.project_id
  prefix          = var.prefix
  template_name   = local.template_name
  subnetwork      = google_compute_subnetwork.trainers.id
  service_account = google_service_account.sa["trainer"].email
  image           = local.trainer_image
  machine_type    = var.trainer.machine_type
  disk_size_gb    = var.trainer.disk_size_gb
  spot            = var.trainer.spot
  ssh_public_key  = var.ssh_public_key
  ready_topic     = local.topics.ready
  mlflow_uri      = module.mlflow.tracking_uri
  wandb_secret    = "${google_secret_manager_secret.wandb_api_key.id}/versions/latest"
  startup_script  = join("\n", [file("${path.module}/../vm/startup.sh"), file("${path.module}/../vm/publish-ready.sh")])
  labels          = local.labels
}

# ---------------------------------------------------------------- MLflow
module "mlflow" {
  source          = "./modules/mlflow"
  project_id      = var.project_id
  prefix          = var.prefix
  region          = var.region
  zone            = var.zone
  network         = google_compute_network.vpc.id
  subnetwork      = google_compute_subnetwork.trainers.id
  image           = local.mlflow_image
  machine_type    = var.mlflow.machine_type
  db_tier         = var.mlflow.db_tier
  users           = var.mlflow.users
  protect_data    = var.mlflow.deletion_protection
  client_tags     = ["${var.prefix}-trainer"]
  service_account = google_service_account.sa["mlflow"].email
  labels          = local.labels
  depends_on      = [google_project_service.apis]
}

# ---------------------------------------------------------------- the functions
module "functions" {
  source          = "./modules/function"
  for_each        = local.functions
  project_id      = var.project_id
  region          = var.region
  name            = each.key
  source_dir      = "${path.module}/build/${each.key}"
  source_bucket   = google_storage_bucket.functions_source.name
  topic_id        = module.topics[each.value.topic].topic_id
  service_account = google_service_account.sa[each.key].email

  dead_letter_topic_id  = module.topics[each.value.topic].dead_letter_topic_id
  pubsub_agent          = local.pubsub_agent
  max_delivery_attempts = var.functions.max_delivery_attempts
  max_instances         = var.functions.max_instances
  timeout_seconds       = var.functions.timeout_seconds
  memory                = var.functions.memory
  vpc_connector         = each.value.vpc ? google_vpc_access_connector.dispatch.id : null
  labels                = local.labels
  environment = {
    GOOGLE_CLOUD_PROJECT       = var.project_id
    SINERGYM_STATE_BUCKET      = google_storage_bucket.state.name
    SINERGYM_RESULTS_BUCKET    = google_storage_bucket.results.name
    SINERGYM_SSH_USER          = "sinergym"
    SINERGYM_SSH_KEY_SECRET    = "${google_secret_manager_secret.ssh_key.id}/versions/latest"
    SINERGYM_CONTROL_SECRET    = "${google_secret_manager_secret.control_secret.id}/versions/latest"
    SINERGYM_VM_AGENT          = "docker exec -i trainer sinergym-vm"
    SINERGYM_MAX_PREEMPTIONS   = tostring(var.control.max_preemptions)
    SINERGYM_MAX_FAILURES      = tostring(var.control.max_failures)
    SINERGYM_HEARTBEAT_TIMEOUT = tostring(var.control.heartbeat_timeout_s)
    SINERGYM_BOOT_TIMEOUT      = tostring(var.control.boot_timeout_s)
    SINERGYM_MAX_RUNTIME_HOURS = tostring(var.control.max_runtime_hours)
    # A batch whose failed share passes this pages at once; the price makes the alerts' cost estimate.
    SINERGYM_FAILURE_RATE_THRESHOLD = tostring(var.control.failure_rate_threshold)
    SINERGYM_VM_HOUR_PRICE          = tostring(var.control.vm_hour_price)
    MLFLOW_TRACKING_URI             = module.mlflow.tracking_uri
  }
  depends_on = [google_project_service.apis]
}

# Cloud Scheduler ticks the sweeper.
resource "google_cloud_scheduler_job" "sweep" {
  project   = var.project_id
  region    = var.region
  name      = "${var.prefix}-sweep"
  schedule  = "*/${var.control.sweep_every_minutes} * * * *"
  time_zone = "Etc/UTC"
  pubsub_target {
    topic_name = module.topics["sweep"].topic_id
    data       = base64encode("{\"source\": \"cloud-scheduler\"}")
  }
  depends_on = [google_project_service.apis]
}

# ---------------------------------------------------------------- Monitoring
module "monitoring" {
  source            = "./modules/monitoring"
  project_id        = var.project_id
  prefix            = var.prefix
  policies          = jsondecode(file("${path.module}/../monitoring/alert_policies.json"))
  docs_url          = var.docs_url
  max_runtime_hours = var.control.max_runtime_hours
  notifications     = var.notifications
  slack_auth_token  = var.slack_auth_token
  depends_on        = [google_project_service.apis]
}
