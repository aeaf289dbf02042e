variable "project_id" {
  description = "Project of the template."
  type        = string
}

variable "prefix" {
  description = "Resource name prefix (also the network tag <prefix>-trainer)."
  type        = string
}

variable "template_name" {
  description = "Name of the instance template (publisher.py --template_name)."
  type        = string
}

variable "subnetwork" {
  description = "Subnetwork of the VMs (no external address; Private Google Access)."
  type        = string
}

variable "service_account" {
  description = "The trainer service account."
  type        = string
}

variable "image" {
  description = "Trainer image in Artifact Registry."
  type        = string
}

variable "machine_type" {
  description = "Machine type of each trainer VM."
  type        = string
  default     = "e2-standard-2"
}

variable "disk_size_gb" {
  description = "Boot disk size."
  type        = number
  default     = 30
}

variable "spot" {
  description = "Spot VMs (cheaper, preemptible; experiments resume from their checkpoint) or on-demand."
  type        = bool
  default     = true
}

variable "ssh_public_key" {
  description = "Public half of dispatch's SSH key, installed for the user sinergym."
  type        = string
}

variable "ready_topic" {
  description = "Topic the startup script publishes instance-ready on."
  type        = string
}

variable "wandb_secret" {
  description = "Secret Manager version name (projects/P/secrets/S/versions/V) of the W&B API key: a name, not the key."
  type        = string
  default     = ""
}

variable "mlflow_uri" {
  description = "MLflow tracking URI given to the trainer container."
  type        = string
}

variable "startup_script" {
  description = "The VM startup script (infra/vm/startup.sh followed by publish-ready.sh)."
  type        = string
}

variable "labels" {
  description = "Labels of the template and its VMs."
  type        = map(string)
  default     = {}
}
