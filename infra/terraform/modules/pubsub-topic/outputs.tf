output "topic_id" {
  description = "projects/<p>/topics/<name>"
  value       = google_pubsub_topic.topic.id
}

output "topic_name" {
  description = "The topic's short name."
  value       = google_pubsub_topic.topic.name
}

output "dead_letter_topic_id" {
  description = "projects/<p>/topics/<name>-dead-letter"
  value       = google_pubsub_topic.dead_letter.id
}
