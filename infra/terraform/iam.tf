# Least privilege: one service account per component, no owner/editor, no keys.
# Every role granted here is in the allowlist a test checks (tests/test_infra.py).

locals {
  service_accounts = {
    launch   = "creates each batch's instance group and VMs, records state"
    dispatch = "reads instances and the SSH key, records state"
    cleanup  = "removes VMs and groups, records state, writes alert metrics"
    sweeper  = "retries or fails lost experiments through the same code as cleanup"
    trainer  = "runs on the VMs: publishes ready and completion messages (results: its experiment's token)"
    mlflow   = "runs the MLflow server: Cloud SQL client, artifact bucket"
  }
  control_plane = ["launch", "dispatch", "cleanup", "sweeper"]
}

resource "google_service_account" "sa" {
  for_each     = local.service_accounts
  project      = var.project_id
  account_id   = "${var.prefix}-${each.key}"
  display_name = "Sinergym ${each.key}: ${each.value}"
}

# Creating a results bucket on first use needs only these two permissions, not storage.admin.
resource "google_project_iam_custom_role" "bucket_creator" {
  project     = var.project_id
  role_id     = replace("${var.prefix}_bucket_creator", "-", "_")
  title       = "Sinergym bucket creator"
  permissions = ["storage.buckets.create", "storage.buckets.get"]
}

resource "google_project_iam_member" "launch_bucket_creator" {
  project = var.project_id
  role    = google_project_iam_custom_role.bucket_creator.id
  member  = "serviceAccount:${google_service_account.sa["launch"].email}"
}

# Groups and VMs: launch creates, cleanup and the sweeper delete (through the group) and recreate.
# The group's own service agent creates and deletes the VMs, so the callers need the group verbs
# and read access only, not compute.instanceAdmin.v1 (which could also create, stop or reconfigure
# any VM, disk or image of the project). Every permission here is one call in sinergym_cloud/gcp/compute.py.
resource "google_project_iam_custom_role" "group_operator" {
  project = var.project_id
  role_id = replace("${var.prefix}_group_operator", "-", "_")
  title   = "Sinergym instance-group operator"
  permissions = [
    "compute.instanceGroupManagers.create",  # insert (launch; the sweeper remakes a vanished group)
    "compute.instanceGroupManagers.get",     # get, listManagedInstances
    "compute.instanceGroupManagers.list",    # the sweeper's orphan search
    "compute.instanceGroupManagers.update",  # createInstances, deleteInstances, recreateInstances
    "compute.instanceGroupManagers.delete",  # delete (the batch's teardown)
    "compute.instanceTemplates.get",         # does the batch's template exist
    "compute.instanceTemplates.useReadOnly", # a group made from the template
    "compute.instances.get",                 # a VM's creation time and liveness
    "compute.zoneOperations.get",            # waiting for an operation (get and wait)
    "compute.globalOperations.get",
    "compute.regions.get",      # the region's quotas and their usage (a batch's parallelism)
    "compute.machineTypes.get", # the template's vCPUs, counted against the CPU quotas
  ]
}

resource "google_project_iam_member" "group_operator" {
  for_each = toset(["launch", "cleanup", "sweeper"])
  project  = var.project_id
  role     = google_project_iam_custom_role.group_operator.id
  member   = "serviceAccount:${google_service_account.sa[each.key].email}"
}

# Dispatch believes no instance-ready message: it reads the instance (status, group, id, address)
# and the host keys its guest agent published, and nothing else (not roles/compute.viewer). A VM
# that comes up for an experiment that has already ended (recreated, or a late ready) it hands back
# to its group: deleteInstances, whose permission is the group's update (no finer one exists).
resource "google_project_iam_custom_role" "instance_reader" {
  project = var.project_id
  role_id = replace("${var.prefix}_instance_reader", "-", "_")
  title   = "Sinergym instance reader"
  permissions = [
    "compute.instances.get",                # instances.get: RUNNING, member of the group, id, networkIP
    "compute.instances.getGuestAttributes", # the host keys (hostkeys/), as gcloud compute ssh reads them
    "compute.instanceGroupManagers.update", # deleteInstances: the VM of an experiment that ended
  ]
}

resource "google_project_iam_member" "instance_reader" {
  project = var.project_id
  role    = google_project_iam_custom_role.instance_reader.id
  member  = "serviceAccount:${google_service_account.sa["dispatch"].email}"
}

# VMs run as the trainer account: whoever creates them must be allowed to use it.
resource "google_service_account_iam_member" "act_as_trainer" {
  for_each           = toset(["launch", "cleanup", "sweeper"])
  service_account_id = google_service_account.sa["trainer"].name
  role               = "roles/iam.serviceAccountUser"
  member             = "serviceAccount:${google_service_account.sa[each.key].email}"
}

resource "google_storage_bucket_iam_member" "state_rw" {
  for_each = toset(local.control_plane)
  bucket   = google_storage_bucket.state.name
  role     = "roles/storage.objectUser"
  member   = "serviceAccount:${google_service_account.sa[each.key].email}"
}

# The sweeper reads heartbeats; nobody in the control plane writes results.
resource "google_storage_bucket_iam_member" "results_reader" {
  bucket = google_storage_bucket.results.name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.sa["sweeper"].email}"
}

# No VM holds a role on the results bucket: a VM reaches it only with the token dispatch makes for
# its experiment, dispatch's own access downscoped by a Credential Access Boundary to the
# experiment's prefixes (sinergym_cloud/gcp/tokens.py). A token cannot carry more than its source
# holds, so dispatch holds objectUser here; it writes nothing itself. See infra/README.md, "Security".
resource "google_storage_bucket_iam_member" "dispatch_results" {
  bucket = google_storage_bucket.results.name
  role   = "roles/storage.objectUser"
  member = "serviceAccount:${google_service_account.sa["dispatch"].email}"
}

resource "google_pubsub_topic_iam_member" "trainer_publishes" {
  for_each = toset(["ready", "completions"])
  project  = var.project_id
  topic    = module.topics[each.key].topic_id
  role     = "roles/pubsub.publisher"
  member   = "serviceAccount:${google_service_account.sa["trainer"].email}"
}

# The sweeper asks dispatch for a running experiment's fresh storage token (a token-refresh
# message on the instance-ready topic: only dispatch may mint one).
resource "google_pubsub_topic_iam_member" "sweeper_asks_tokens" {
  project = var.project_id
  topic   = module.topics["ready"].topic_id
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${google_service_account.sa["sweeper"].email}"
}

# Functions publish rejected messages to their topic's dead-letter topic.
resource "google_pubsub_topic_iam_member" "dead_letters" {
  for_each = { launch = "batches", dispatch = "ready", cleanup = "completions", sweeper = "sweep" }
  project  = var.project_id
  topic    = module.topics[each.value].dead_letter_topic_id
  role     = "roles/pubsub.publisher"
  member   = "serviceAccount:${google_service_account.sa[each.key].email}"
}

resource "google_secret_manager_secret_iam_member" "dispatch_reads_key" {
  project   = var.project_id
  secret_id = google_secret_manager_secret.ssh_key.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.sa["dispatch"].email}"
}

# The deployment secret completion and checkpoint keys are derived from (sinergym_cloud/signing.py):
# dispatch derives and hands them out, cleanup verifies. No VM, and no other function, can read it.
resource "google_secret_manager_secret_iam_member" "control_secret" {
  for_each  = toset(["dispatch", "cleanup"])
  project   = var.project_id
  secret_id = google_secret_manager_secret.control_secret.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.sa[each.key].email}"
}

resource "google_secret_manager_secret_iam_member" "trainer_reads_wandb_key" {
  project   = var.project_id
  secret_id = google_secret_manager_secret.wandb_api_key.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.sa["trainer"].email}"
}

resource "google_project_iam_member" "metric_writer" {
  for_each = toset(["cleanup", "sweeper", "launch"])
  project  = var.project_id
  role     = "roles/monitoring.metricWriter"
  member   = "serviceAccount:${google_service_account.sa[each.key].email}"
}

resource "google_project_iam_member" "log_writer" {
  for_each = toset(["trainer", "mlflow"])
  project  = var.project_id
  role     = "roles/logging.logWriter"
  member   = "serviceAccount:${google_service_account.sa[each.key].email}"
}

resource "google_artifact_registry_repository_iam_member" "pull" {
  for_each   = toset(["trainer", "mlflow"])
  project    = var.project_id
  location   = var.region
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.reader"
  member     = "serviceAccount:${google_service_account.sa[each.key].email}"
}
