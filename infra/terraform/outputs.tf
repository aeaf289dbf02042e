output "topics" {
  description = "Pub/Sub topics by role."
  value       = { for k, m in module.topics : k => m.topic_name }
}

output "results_bucket" {
  description = "Where every experiment's outputs go (SINERGYM_RESULTS_BUCKET)."
  value       = google_storage_bucket.results.name
}

output "state_bucket" {
  description = "The control plane's state (SINERGYM_STATE_BUCKET)."
  value       = google_storage_bucket.state.name
}

output "instance_template" {
  description = "Pass as --template_name to publisher.py."
  value       = module.trainer_vm.template_name
}

output "trainer_image" {
  description = "Where to push the trainer image."
  value       = local.trainer_image
}

output "mlflow_image" {
  description = "Where to push the MLflow server image."
  value       = local.mlflow_image
}

output "mlflow_tracking_uri" {
  description = "Internal address of the MLflow server (reach it from a laptop through IAP: infra/README.md)."
  value       = module.mlflow.tracking_uri
}

output "mlflow_instance" {
  description = "The MLflow VM, for `gcloud compute start-iap-tunnel`."
  value       = module.mlflow.instance_name
}

output "ssh_key_secret" {
  description = "Secret that must hold dispatch's private SSH key (add it with gcloud secrets versions add)."
  value       = google_secret_manager_secret.ssh_key.id
}

output "functions" {
  description = "The deployed functions."
  value       = { for k, m in module.functions : k => m.function_name }
}

output "publisher_environment" {
  description = "What publisher.py needs on your laptop."
  value = {
    GOOGLE_CLOUD_PROJECT    = var.project_id
    SINERGYM_STATE_BUCKET   = google_storage_bucket.state.name
    SINERGYM_RESULTS_BUCKET = google_storage_bucket.results.name
  }
}

output "control_secret" {
  description = "Secret that must hold the control plane's deployment secret (add 32+ random bytes with gcloud secrets versions add)."
  value       = google_secret_manager_secret.control_secret.id
}

output "wandb_api_key_secret" {
  description = "Secret that may hold the W&B API key for trainers (gcloud secrets versions add ... --data-file=-)."
  value       = google_secret_manager_secret.wandb_api_key.id
}

output "batch_events" {
  description = "The batch-events topic other services subscribe to, and the example subscription of batch.finished events."
  value = {
    topic        = google_pubsub_topic.batch_events.name
    subscription = var.events.example_subscription ? google_pubsub_subscription.batch_finished[0].name : null
  }
}
