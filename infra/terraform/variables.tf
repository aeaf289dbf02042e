variable "project_id" {
  description = "Google Cloud project to deploy to."
  type        = string
  validation {
    condition     = can(regex("^[a-z][-a-z0-9]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a valid project id (6-30 lowercase letters, digits, dashes)."
  }
}

variable "region" {
  description = "Region of the functions, buckets, Cloud SQL, the registry and the VPC connector."
  type        = string
  default     = "europe-west1"
}

variable "zone" {
  description = "Default zone of the trainer VMs and of the MLflow server (batches may choose another zone of the region)."
  type        = string
  default     = "europe-west1-b"
  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+-[a-z]$", var.zone))
    error_message = "zone must look like europe-west1-b."
  }
}

variable "prefix" {
  description = "Prefix of every resource name."
  type        = string
  default     = "sinergym"
  validation {
    condition     = can(regex("^[a-z][-a-z0-9]{1,18}$", var.prefix))
    error_message = "prefix must be 2-19 lowercase letters, digits or dashes, starting with a letter."
  }
}

variable "buckets" {
  description = "Bucket names (globally unique; default <project>-<prefix>-results and -state) and how long results are kept."
  type = object({
    results                = optional(string)
    state                  = optional(string)
    results_retention_days = optional(number, 365)
    state_retention_days   = optional(number, 90)
  })
  default = {}
  validation {
    condition     = var.buckets.results_retention_days >= 1 && var.buckets.state_retention_days >= 1
    error_message = "Retention periods are at least one day."
  }
}

variable "trainer" {
  description = "The trainer VMs: image (default: <region>-docker.pkg.dev/<project>/<prefix>/trainer:latest), machine type, disk, spot or on-demand."
  type = object({
    image        = optional(string)
    machine_type = optional(string, "e2-standard-2")
    disk_size_gb = optional(number, 30)
    spot         = optional(bool, true)
  })
  default = {}
  validation {
    condition     = var.trainer.disk_size_gb >= 20
    error_message = "The trainer image needs a disk of at least 20 GB."
  }
}

variable "ssh_public_key" {
  description = "Public half (OpenSSH one-line format) of dispatch's SSH key. The private half goes to Secret Manager with `gcloud secrets versions add` (see infra/README.md): it never enters Terraform state."
  type        = string
  validation {
    condition     = can(regex("^(ssh-ed25519|ecdsa-sha2-nistp256|ssh-rsa) [A-Za-z0-9+/=]+", var.ssh_public_key))
    error_message = "ssh_public_key must be an OpenSSH public key line."
  }
}

variable "functions" {
  description = "Limits of the Cloud Functions."
  type = object({
    max_instances   = optional(number, 20)
    timeout_seconds = optional(number, 300)
    memory          = optional(string, "512M")
    # Deliveries of a message a function keeps failing on before it goes to the dead-letter topic.
    max_delivery_attempts = optional(number, 10)
  })
  default = {}
  validation {
    condition     = var.functions.timeout_seconds >= 60 && var.functions.timeout_seconds <= 540
    error_message = "Event-driven functions time out between 60 and 540 seconds."
  }
}

variable "control" {
  description = "Retry budgets and time limits of the control plane."
  type = object({
    max_preemptions     = optional(number, 3)
    max_failures        = optional(number, 0)
    heartbeat_timeout_s = optional(number, 600)
    boot_timeout_s      = optional(number, 900)
    max_runtime_hours   = optional(number, 48)
    sweep_every_minutes = optional(number, 5)
    # A batch whose failed experiments pass this share of all of them pages on-call at once (1: never).
    failure_rate_threshold = optional(number, 0.25)
    # USD per VM-hour of the trainer's machine type, for the alerts' estimated cost (0: no estimate).
    vm_hour_price = optional(number, 0.025)
  })
  default = {}
  validation {
    condition     = var.control.max_runtime_hours > 0 && var.control.sweep_every_minutes >= 1
    error_message = "max_runtime_hours must be positive and sweep_every_minutes at least 1."
  }
  validation {
    condition     = var.control.failure_rate_threshold > 0 && var.control.failure_rate_threshold <= 1 && var.control.vm_hour_price >= 0
    error_message = "failure_rate_threshold is a share in (0, 1]; vm_hour_price is at least 0."
  }
}

variable "docs_url" {
  description = "Where on-call staff read this project's docs (the docs/ folder of your copy of the repository): every alert links to its runbook section there."
  type        = string
  default     = "https://github.com/ugr-sail/sinergym-cloud/blob/main/docs"
}

variable "mlflow" {
  description = "The MLflow tracking server (on a VM with a static internal address) and its Cloud SQL database."
  type = object({
    image        = optional(string)
    machine_type = optional(string, "e2-small")
    db_tier      = optional(string, "db-f1-micro")
    users        = optional(list(string), [])
    # Keep the runs: Terraform cannot delete the database while this is true.
    deletion_protection = optional(bool, true)
  })
  default = {}
}

variable "notifications" {
  description = "Where alerts go: e-mail addresses, SMS numbers in E.164 (+34...), a Slack channel (with slack_auth_token)."
  type = object({
    emails        = optional(list(string), [])
    sms_numbers   = optional(list(string), [])
    slack_channel = optional(string)
  })
  default = {}
  validation {
    condition     = alltrue([for n in var.notifications.sms_numbers : can(regex("^\\+[0-9]{6,15}$", n))])
    error_message = "SMS numbers are in E.164 form, e.g. +34600000000."
  }
}

variable "slack_auth_token" {
  description = "OAuth token of the Slack app that posts alerts (only with notifications.slack_channel)."
  type        = string
  default     = null
  sensitive   = true
}

variable "labels" {
  description = "Labels on every resource that takes labels."
  type        = map(string)
  default     = {}
}

variable "events" {
  description = "The batch-events topic's example subscription (only batch.finished events) and who may read it (IAM members)."
  type = object({
    example_subscription = optional(bool, true)
    subscribers          = optional(list(string), [])
  })
  default = {}
}

variable "operators" {
  description = "IAM members who run the publisher (user:..., group:...): submit, follow, cancel, read results (operators.tf)."
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for m in var.operators : can(regex("^(user|group|serviceAccount|domain):", m))])
    error_message = "Each operator is an IAM member: user:EMAIL, group:EMAIL, serviceAccount:EMAIL or domain:DOMAIN."
  }
}
