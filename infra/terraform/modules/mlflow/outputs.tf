output "tracking_uri" {
  description = "MLflow tracking URI for the trainers (a static internal address)."
  value       = "http://${google_compute_address.mlflow.address}:5000"
}

output "instance_name" {
  description = "The server VM, for IAP tunnels."
  value       = google_compute_instance.mlflow.name
}

output "artifact_bucket" {
  description = "Where MLflow keeps artifacts."
  value       = google_storage_bucket.artifacts.name
}
