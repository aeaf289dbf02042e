variable "project_id" {
  description = "Project of the topics."
  type        = string
}

variable "name" {
  description = "Topic name (the dead-letter topic is <name>-dead-letter)."
  type        = string
  validation {
    condition     = can(regex("^[A-Za-z][-A-Za-z0-9._~%+]{2,200}$", var.name))
    error_message = "Pub/Sub topic names are 3-255 characters and start with a letter."
  }
}

variable "labels" {
  description = "Labels of the topics."
  type        = map(string)
  default     = {}
}

variable "pubsub_agent" {
  description = "The project's Pub/Sub service agent (service-<number>@gcp-sa-pubsub.iam.gserviceaccount.com)."
  type        = string
}

variable "retention_seconds" {
  description = "How long unacknowledged messages are kept."
  type        = number
  default     = 604800
  validation {
    condition     = var.retention_seconds >= 600 && var.retention_seconds <= 2678400
    error_message = "Retention is between 10 minutes and 31 days."
  }
}
