# One Cloud Function (2nd gen, python312) and the push subscription that triggers it.
#
# The trigger is a Pub/Sub push subscription of our own rather than an Eventarc trigger, because
# Eventarc's managed subscription cannot carry a dead-letter policy or a retry backoff. Pushing to
# <function URI>/projects/<p>/topics/<t> makes functions-framework turn the push into the same
# CloudEvent (type google.cloud.pubsub.topic.v1.messagePublished, source of that topic) that
# Eventarc would deliver; the local cloud delivers exactly so. Errors: a transient one fails the
# request and Pub/Sub redelivers with backoff; after max_delivery_attempts the message goes to the
# topic's dead-letter topic; a permanent one is dead-lettered by the function itself (with the
# reason attached) and acknowledged.

data "archive_file" "source" {
  type        = "zip"
  source_dir  = var.source_dir
  output_path = "${path.root}/build/${var.name}.zip"
}

resource "google_storage_bucket_object" "source" {
  name   = "${var.name}/${data.archive_file.source.output_md5}.zip"
  bucket = var.source_bucket
  source = data.archive_file.source.output_path
}

resource "google_cloudfunctions2_function" "function" {
  project  = var.project_id
  location = var.region
  name     = var.name
  labels   = var.labels

  build_config {
    runtime     = "python312"
    entry_point = var.name
    source {
      storage_source {
        bucket = var.source_bucket
        object = google_storage_bucket_object.source.name
      }
    }
  }

  service_config {
    service_account_email            = var.service_account
    timeout_seconds                  = var.timeout_seconds
    max_instance_count               = var.max_instances
    available_memory                 = var.memory
    max_instance_request_concurrency = 1
    ingress_settings                 = "ALLOW_INTERNAL_ONLY"
    all_traffic_on_latest_revision   = true
    environment_variables            = var.environment
    vpc_connector                    = var.vpc_connector
    vpc_connector_egress_settings    = var.vpc_connector == null ? null : "PRIVATE_RANGES_ONLY"
  }

}

# Pub/Sub pushes with an OIDC token of the function's own account: it may invoke the function.
resource "google_cloud_run_service_iam_member" "trigger_invokes" {
  project  = var.project_id
  location = var.region
  service  = google_cloudfunctions2_function.function.name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${var.service_account}"
}

resource "google_pubsub_subscription" "push" {
  project                    = var.project_id
  name                       = "${var.name}-push"
  topic                      = var.topic_id
  labels                     = var.labels
  ack_deadline_seconds       = min(600, var.timeout_seconds + 30)
  message_retention_duration = "604800s"

  push_config {
    push_endpoint = "${google_cloudfunctions2_function.function.service_config[0].uri}/${var.topic_id}"
    oidc_token {
      service_account_email = var.service_account
    }
  }

  retry_policy {
    minimum_backoff = "${var.retry_backoff_seconds.min}s"
    maximum_backoff = "${var.retry_backoff_seconds.max}s"
  }

  dead_letter_policy {
    dead_letter_topic     = var.dead_letter_topic_id
    max_delivery_attempts = var.max_delivery_attempts
  }

  expiration_policy {
    ttl = ""
  }
}

# Dead-lettering needs Pub/Sub's service agent to acknowledge the forwarded message on this
# subscription (and to publish on the dead-letter topic: granted by the topic module).
resource "google_pubsub_subscription_iam_member" "agent_forwards_dead_letters" {
  project      = var.project_id
  subscription = google_pubsub_subscription.push.name
  role         = "roles/pubsub.subscriber"
  member       = "serviceAccount:${var.pubsub_agent}"
}
