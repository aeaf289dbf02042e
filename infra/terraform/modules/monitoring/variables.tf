variable "project_id" {
  description = "Project of the policies and dashboard."
  type        = string
}

variable "prefix" {
  description = "Resource name prefix."
  type        = string
}

variable "policies" {
  description = "Threshold policies on the project's metrics (infra/monitoring/alert_policies.json)."
  type = list(object({
    id            = string
    display_name  = string
    metric        = string
    comparison    = string
    threshold     = number
    severity      = string
    subject       = string
    documentation = string
    # The incident closes by itself once its series has had no point for this long.
    auto_close_seconds = number
    # At most three; "{docs}" in a url stands for var.docs_url.
    links = list(object({ display_name = string, url = string }))
  }))
  validation {
    condition     = alltrue([for p in var.policies : startswith(p.metric, "custom.googleapis.com/sinergym/")])
    error_message = "Policies here watch the project's own custom.googleapis.com/sinergym/ metrics."
  }
}

variable "docs_url" {
  description = "Where on-call staff read the project's docs (its docs/ folder): the alerts link to the runbook there."
  type        = string
}

variable "max_runtime_hours" {
  description = "A trainer VM running longer than this raises an alert."
  type        = number
}

variable "notifications" {
  description = "Notification targets: emails, SMS numbers, Slack channel."
  type = object({
    emails        = optional(list(string), [])
    sms_numbers   = optional(list(string), [])
    slack_channel = optional(string)
  })
}

variable "slack_auth_token" {
  description = "Slack app OAuth token (with notifications.slack_channel)."
  type        = string
  default     = null
  sensitive   = true
}
