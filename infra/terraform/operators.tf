# The people (or groups) who run the publisher: submit batches, follow them, cancel them, read their
# results, repair a group by hand. Least privilege for them too: what publisher.py and the
# everyday gcloud commands of README.md ask, and nothing that makes VMs or reads secrets.
# The local cloud enforces these roles on its "operator" identity (localcloud/iam.py).

resource "google_project_iam_custom_role" "operator" {
  project = var.project_id
  role_id = replace("${var.prefix}_operator", "-", "_")
  title   = "Sinergym operator"
  permissions = [
    "compute.instanceGroupManagers.get",    # status: a group's VMs (listManagedInstances)
    "compute.instanceGroupManagers.list",   # gcloud compute instance-groups managed list
    "compute.instanceGroupManagers.update", # cancel, or a VM deleted by hand: deleteInstances
    "compute.instanceGroupManagers.delete", # cancel: the batch's groups
    "compute.instanceGroups.get",           # gcloud's views of a group
    "compute.instanceGroups.list",
    "compute.instanceTemplates.get", # --dry-run: the template's machine type
    "compute.instanceTemplates.list",
    "compute.instances.get",
    "compute.instances.list",
    "compute.machineTypes.get", # --dry-run: vCPUs against the quotas
    "compute.machineTypes.list",
    "compute.regions.get", # --dry-run: the region's quotas
    "compute.regions.list",
    "compute.zones.get",
    "compute.zones.list",
    "compute.zoneOperations.get", # waiting for a cancel's deletions
    "compute.zoneOperations.list",
    "compute.globalOperations.get",
    "compute.globalOperations.list",
    "compute.autoscalers.get", # gcloud asks before it shows or deletes a group
    "compute.autoscalers.list",
  ]
}

resource "google_project_iam_member" "operator" {
  for_each = toset(var.operators)
  project  = var.project_id
  role     = google_project_iam_custom_role.operator.id
  member   = each.value
}

# Submitting a batch is publishing it.
resource "google_pubsub_topic_iam_member" "operators_submit" {
  for_each = toset(var.operators)
  project  = var.project_id
  topic    = module.topics["batches"].topic_id
  role     = "roles/pubsub.publisher"
  member   = each.value
}

# status, list, logs, report, tensorboard read the records and the outputs; cancel and list
# --reindex write records (as the control plane would).
resource "google_storage_bucket_iam_member" "operators_state" {
  for_each = toset(var.operators)
  bucket   = google_storage_bucket.state.name
  role     = "roles/storage.objectUser"
  member   = each.value
}

resource "google_storage_bucket_iam_member" "operators_results" {
  for_each = toset(var.operators)
  bucket   = google_storage_bucket.results.name
  role     = "roles/storage.objectViewer"
  member   = each.value
}

# status shows the alerts that were raised.
resource "google_project_iam_member" "operators_monitoring" {
  for_each = toset(var.operators)
  project  = var.project_id
  role     = "roles/monitoring.viewer"
  member   = each.value
}

# cancel ends a batch as the control plane would: it tells other services (batch-events) and
# raises the batch_finished alert for on-call.
resource "google_pubsub_topic_iam_member" "operators_events" {
  for_each = toset(var.operators)
  project  = var.project_id
  topic    = google_pubsub_topic.batch_events.id
  role     = "roles/pubsub.publisher"
  member   = each.value
}

resource "google_project_iam_member" "operators_alerts" {
  for_each = toset(var.operators)
  project  = var.project_id
  role     = "roles/monitoring.metricWriter"
  member   = each.value
}
