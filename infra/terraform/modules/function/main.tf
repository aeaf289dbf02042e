# One Cloud Function (2nd gen, python312), triggered by its Pub/Sub topic through Eventarc, with
# retry on failure: a transient error makes Pub/Sub redeliver; a permanent one is dead-lettered by
# the function itself and acknowledged.

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

  event_trigger {
    trigger_region        = var.region
    event_type            = "google.cloud.pubsub.topic.v1.messagePublished"
    pubsub_topic          = var.topic_id
    retry_policy          = "RETRY_POLICY_RETRY"
    service_account_email = var.service_account
  }
}

# Eventarc pushes as the function's own account: it may invoke the function, nothing else.
resource "google_cloud_run_service_iam_member" "trigger_invokes" {
  project  = var.project_id
  location = var.region
  service  = google_cloudfunctions2_function.function.name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${var.service_account}"
}
