output "policy_ids" {
  description = "Alert policies by id."
  value       = merge({ for k, p in google_monitoring_alert_policy.metric : k => p.id }, { vm_runtime = google_monitoring_alert_policy.vm_runtime.id })
}

output "dashboard_id" {
  description = "The dashboard."
  value       = google_monitoring_dashboard.sinergym.id
}
