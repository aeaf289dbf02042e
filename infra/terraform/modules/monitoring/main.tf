# Alert policies for on-call staff and a dashboard. The policies on the project's own metrics come
# from infra/monitoring/alert_policies.json, which the local cloud's Monitoring emulator loads too.

locals {
  emails = { for e in var.notifications.emails : e => e }
  sms    = { for n in var.notifications.sms_numbers : n => n }
  channels = concat(
    [for c in google_monitoring_notification_channel.email : c.id],
    [for c in google_monitoring_notification_channel.sms : c.id],
    [for c in google_monitoring_notification_channel.slack : c.id],
  )
  policies = { for p in var.policies : p.id => p }
}

resource "google_monitoring_notification_channel" "email" {
  for_each     = local.emails
  project      = var.project_id
  display_name = "Sinergym on-call: ${each.value}"
  type         = "email"
  labels = {
    email_address = each.value
  }
}

resource "google_monitoring_notification_channel" "sms" {
  for_each     = local.sms
  project      = var.project_id
  display_name = "Sinergym on-call SMS"
  type         = "sms"
  labels = {
    number = each.value
  }
}

resource "google_monitoring_notification_channel" "slack" {
  count        = var.notifications.slack_channel == null ? 0 : 1
  project      = var.project_id
  display_name = "Sinergym on-call Slack"
  type         = "slack"
  labels = {
    channel_name = var.notifications.slack_channel
  }
  sensitive_labels {
    auth_token = var.slack_auth_token
  }
}

resource "google_monitoring_alert_policy" "metric" {
  for_each     = local.policies
  project      = var.project_id
  display_name = each.value.display_name
  combiner     = "OR"
  severity     = each.value.severity
  conditions {
    display_name = each.value.display_name
    condition_threshold {
      filter          = "metric.type = \"${each.value.metric}\" AND resource.type = \"global\""
      comparison      = each.value.comparison
      threshold_value = each.value.threshold
      duration        = "0s"
      trigger {
        count = 1
      }
    }
  }
  documentation {
    subject   = each.value.subject
    content   = each.value.documentation
    mime_type = "text/markdown"
    dynamic "links" {
      for_each = each.value.links
      content {
        display_name = links.value.display_name
        url          = replace(links.value.url, "{docs}", trimsuffix(var.docs_url, "/"))
      }
    }
  }
  alert_strategy {
    auto_close = "${each.value.auto_close_seconds}s"
  }
  notification_channels = local.channels
}

# Belt and braces for the sweeper: Compute Engine's own uptime metric of any trainer VM.
resource "google_monitoring_alert_policy" "vm_runtime" {
  project      = var.project_id
  display_name = "Sinergym trainer VM running longer than ${var.max_runtime_hours} h"
  combiner     = "OR"
  severity     = "CRITICAL"
  conditions {
    display_name = "uptime over ${var.max_runtime_hours} h"
    condition_threshold {
      filter          = "metric.type = \"compute.googleapis.com/instance/uptime_total\" AND resource.type = \"gce_instance\" AND metadata.user_labels.\"app\" = \"sinergym\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.max_runtime_hours * 3600
      duration        = "300s"
      aggregations {
        alignment_period   = "300s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }
  documentation {
    subject   = "A Sinergym trainer VM has run longer than ${var.max_runtime_hours} hours"
    content   = "Instance $${resource.label.instance_id} in $${resource.label.zone} is over the maximum runtime. The sweeper should have removed it: check `python publisher.py status <batch>` and the sweeper's logs."
    mime_type = "text/markdown"
  }
  notification_channels = local.channels
}

resource "google_monitoring_dashboard" "sinergym" {
  project = var.project_id
  dashboard_json = jsonencode({
    displayName = "Sinergym experiments (${var.prefix})"
    gridLayout = {
      columns = 2
      widgets = [
        {
          title = "Batches finished"
          xyChart = { dataSets = [{ plotType = "STACKED_BAR", timeSeriesQuery = { timeSeriesFilter = {
            filter      = "metric.type=\"custom.googleapis.com/sinergym/batch_finished\" resource.type=\"global\""
            aggregation = { alignmentPeriod = "3600s", perSeriesAligner = "ALIGN_COUNT", crossSeriesReducer = "REDUCE_SUM" }
          } } }] }
        },
        {
          title = "Experiments failed"
          xyChart = { dataSets = [{ plotType = "STACKED_BAR", timeSeriesQuery = { timeSeriesFilter = {
            filter      = "metric.type=\"custom.googleapis.com/sinergym/experiment_failed\" resource.type=\"global\""
            aggregation = { alignmentPeriod = "3600s", perSeriesAligner = "ALIGN_COUNT", crossSeriesReducer = "REDUCE_SUM" }
          } } }] }
        },
        {
          title = "Trainer VMs running"
          xyChart = { dataSets = [{ plotType = "LINE", timeSeriesQuery = { timeSeriesFilter = {
            filter      = "metric.type=\"compute.googleapis.com/instance/uptime\" resource.type=\"gce_instance\" metadata.user_labels.\"app\"=\"sinergym\""
            aggregation = { alignmentPeriod = "300s", perSeriesAligner = "ALIGN_RATE", crossSeriesReducer = "REDUCE_COUNT" }
          } } }] }
        },
        {
          title = "Function executions"
          xyChart = { dataSets = [{ plotType = "LINE", timeSeriesQuery = { timeSeriesFilter = {
            filter      = "metric.type=\"run.googleapis.com/request_count\" resource.type=\"cloud_run_revision\" resource.label.\"service_name\"=monitoring.regex.full_match(\"launch|dispatch|cleanup|sweeper\")"
            aggregation = { alignmentPeriod = "300s", perSeriesAligner = "ALIGN_RATE", crossSeriesReducer = "REDUCE_SUM", groupByFields = ["resource.label.service_name", "metric.label.response_code_class"] }
          } } }] }
        },
      ]
    }
  })
}
