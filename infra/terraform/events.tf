# The batch-events topic: what the control plane tells other services (docs/batches.md, "Events"):
# every experiment's state change, a batch's end (counts, VM-hours, outputs, MLflow) and a refused
# batch. Versioned JSON (`python publisher.py schema --events`), with the attributes event, state,
# batch_id and experiment_index for subscription filters.

resource "google_pubsub_topic" "batch_events" {
  #checkov:skip=CKV_GCP_83:Events carry batch ids, states and reasons, no personal data or secret; Google-managed encryption at rest suffices.
  project                    = var.project_id
  name                       = "batch-events" # sinergym_cloud/names.py TOPIC_EVENTS (a test checks it)
  labels                     = local.labels
  message_retention_duration = "604800s"
  depends_on                 = [google_project_service.apis]
}

# Every function that changes an experiment's state or ends a batch publishes its events.
resource "google_pubsub_topic_iam_member" "events_publishers" {
  for_each = toset(local.control_plane)
  project  = var.project_id
  topic    = google_pubsub_topic.batch_events.id
  role     = "roles/pubsub.publisher"
  member   = "serviceAccount:${google_service_account.sa[each.key].email}"
}

# An example subscription for another service: only each batch's end (the filter is applied by
# Pub/Sub; the other events are acknowledged for it). Push it to a Cloud Run service or a function
# (docs/batches.md), or pull it.
resource "google_pubsub_subscription" "batch_finished" {
  count                      = var.events.example_subscription ? 1 : 0
  project                    = var.project_id
  name                       = "${var.prefix}-batch-finished"
  topic                      = google_pubsub_topic.batch_events.id
  labels                     = local.labels
  filter                     = "attributes.event = \"batch.finished\""
  ack_deadline_seconds       = 60
  message_retention_duration = "604800s"
  expiration_policy {
    ttl = ""
  }
}

# Who may read the example subscription (e.g. serviceAccount:my-service@PROJECT.iam.gserviceaccount.com).
resource "google_pubsub_subscription_iam_member" "batch_finished_readers" {
  for_each     = var.events.example_subscription ? toset(var.events.subscribers) : toset([])
  project      = var.project_id
  subscription = google_pubsub_subscription.batch_finished[0].name
  role         = "roles/pubsub.subscriber"
  member       = each.value
}
