variable "project_id" {
  description = "Project of the MLflow server."
  type        = string
}

variable "prefix" {
  description = "Resource name prefix."
  type        = string
}

variable "region" {
  description = "Region of Cloud SQL, the bucket and the address."
  type        = string
}

variable "zone" {
  description = "Zone of the server VM."
  type        = string
}

variable "network" {
  description = "VPC (id) the server and Cloud SQL's private IP live in."
  type        = string
}

variable "subnetwork" {
  description = "Subnetwork of the server's static internal address."
  type        = string
}

variable "image" {
  description = "MLflow server image (infra/mlflow/Dockerfile)."
  type        = string
}

variable "machine_type" {
  description = "Machine type of the server VM."
  type        = string
  default     = "e2-small"
}

variable "db_tier" {
  description = "Cloud SQL tier."
  type        = string
  default     = "db-f1-micro"
}

variable "users" {
  description = "Principals (user:..., group:...) allowed to open the UI through IAP."
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for u in var.users : can(regex("^(user|group|serviceAccount|domain):", u))])
    error_message = "Each user is a principal such as user:name@example.org or group:team@example.org."
  }
}

variable "protect_data" {
  description = "Cloud SQL deletion protection (false only for throw-away deployments, such as the real-cloud test tier)."
  type        = bool
  default     = true
}

variable "client_tags" {
  description = "Network tags of the VMs allowed to reach the server (the trainers)."
  type        = list(string)
}

variable "service_account" {
  description = "The MLflow server's service account."
  type        = string
}

variable "labels" {
  description = "Labels of every resource."
  type        = map(string)
  default     = {}
}
