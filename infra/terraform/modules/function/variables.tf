variable "project_id" {
  description = "Project of the function."
  type        = string
}

variable "region" {
  description = "Region of the function and its trigger."
  type        = string
}

variable "name" {
  description = "Function name; also its entry point in main.py."
  type        = string
  validation {
    condition     = contains(["launch", "dispatch", "cleanup", "sweeper"], var.name)
    error_message = "One of the project's functions: launch, dispatch, cleanup, sweeper."
  }
}

variable "source_dir" {
  description = "Directory with main.py, requirements.txt and the sinergym_cloud package (scripts/build_functions.py)."
  type        = string
}

variable "source_bucket" {
  description = "Bucket for the source archive."
  type        = string
}

variable "topic_id" {
  description = "Pub/Sub topic that triggers the function."
  type        = string
}

variable "dead_letter_topic_id" {
  description = "Topic that receives messages the function failed on max_delivery_attempts times."
  type        = string
}

variable "pubsub_agent" {
  description = "The project's Pub/Sub service agent (service-<number>@gcp-sa-pubsub.iam.gserviceaccount.com)."
  type        = string
}

variable "max_delivery_attempts" {
  description = "Deliveries of one message before it is dead-lettered."
  type        = number
  default     = 10
  validation {
    condition     = var.max_delivery_attempts >= 5 && var.max_delivery_attempts <= 100
    error_message = "Pub/Sub allows 5 to 100 delivery attempts."
  }
}

variable "retry_backoff_seconds" {
  description = "Exponential backoff between redeliveries of a failed message, in seconds."
  type = object({
    min = optional(number, 10)
    max = optional(number, 600)
  })
  default = {}
  validation {
    condition = (var.retry_backoff_seconds.min >= 0 && var.retry_backoff_seconds.max <= 600 &&
    var.retry_backoff_seconds.min <= var.retry_backoff_seconds.max)
    error_message = "Backoff is between 0 and 600 seconds, min <= max."
  }
}

variable "service_account" {
  description = "The function's own service account (also the identity of its push subscription)."
  type        = string
}

variable "max_instances" {
  description = "Upper bound on concurrent instances."
  type        = number
  default     = 20
  validation {
    condition     = var.max_instances >= 1 && var.max_instances <= 1000
    error_message = "Between 1 and 1000 instances."
  }
}

variable "timeout_seconds" {
  description = "Deadline of one invocation."
  type        = number
  default     = 300
}

variable "memory" {
  description = "Memory per instance."
  type        = string
  default     = "512M"
}

variable "vpc_connector" {
  description = "Serverless VPC Access connector for private egress (dispatch -> the VMs' sshd), or null."
  type        = string
  default     = null
}

variable "environment" {
  description = "Environment variables of the function."
  type        = map(string)
  default     = {}
}

variable "labels" {
  description = "Labels of the function."
  type        = map(string)
  default     = {}
}
