output "template_name" {
  description = "The instance template's name."
  value       = google_compute_instance_template.trainer.name
}

output "template_id" {
  description = "The instance template's id."
  value       = google_compute_instance_template.trainer.id
}
