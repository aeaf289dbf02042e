output "function_name" {
  description = "The function's name."
  value       = google_cloudfunctions2_function.function.name
}

output "service_uri" {
  description = "The function's internal URI."
  value       = google_cloudfunctions2_function.function.service_config[0].uri
}

output "subscription_id" {
  description = "The push subscription that triggers the function."
  value       = google_pubsub_subscription.push.id
}
