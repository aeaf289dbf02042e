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

variable "service_account" {
  description = "The function's own service account (also used by its trigger)."
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
