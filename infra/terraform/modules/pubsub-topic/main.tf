# A topic, its dead-letter topic, and a subscription on the dead letters so they can be read back.
# Two roads lead there: a function dead-letters a message that can never be processed itself (with
# the reason attached), and Pub/Sub forwards one a function failed on too many times (the dead-letter
# policy of the function's push subscription, modules/function).

resource "google_pubsub_topic" "topic" {
  #checkov:skip=CKV_GCP_83:Messages carry experiment specs and outcomes, no personal data or secret; Google-managed encryption at rest suffices.
  project                    = var.project_id
  name                       = var.name
  labels                     = var.labels
  message_retention_duration = "${var.retention_seconds}s"
}

resource "google_pubsub_topic" "dead_letter" {
  #checkov:skip=CKV_GCP_83:Same content as the source topic (rejected messages); Google-managed encryption at rest suffices.
  project                    = var.project_id
  name                       = "${var.name}-dead-letter"
  labels                     = var.labels
  message_retention_duration = "${var.retention_seconds}s"
}

resource "google_pubsub_subscription" "dead_letter_inspect" {
  project                    = var.project_id
  name                       = "${var.name}-dead-letter-inspect"
  topic                      = google_pubsub_topic.dead_letter.id
  labels                     = var.labels
  ack_deadline_seconds       = 60
  message_retention_duration = "${var.retention_seconds}s"
  expiration_policy {
    ttl = ""
  }
}

# Lets Pub/Sub itself forward undeliverable messages of subscriptions that set a dead-letter policy.
resource "google_pubsub_topic_iam_member" "agent_publishes_dead_letters" {
  project = var.project_id
  topic   = google_pubsub_topic.dead_letter.id
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${var.pubsub_agent}"
}
