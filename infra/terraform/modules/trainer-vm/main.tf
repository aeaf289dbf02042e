# The instance template of the trainer VMs: Container-Optimized OS, no external address, shielded,
# spot or on-demand. The startup script starts the trainer container and publishes instance-ready.
# Instance metadata holds no secret: only the public half of dispatch's SSH key and settings.

resource "google_compute_instance_template" "trainer" {
  project      = var.project_id
  name         = var.template_name
  description  = "Sinergym trainer VM: COS + the trainer container, started by its startup script."
  machine_type = var.machine_type
  tags         = ["${var.prefix}-trainer"]
  labels       = var.labels

  disk {
    source_image = "projects/cos-cloud/global/images/family/cos-stable"
    disk_size_gb = var.disk_size_gb
    disk_type    = "pd-balanced"
    boot         = true
    auto_delete  = true
  }

  network_interface {
    subnetwork = var.subnetwork
  }

  service_account {
    email  = var.service_account
    scopes = ["cloud-platform"]
  }

  shielded_instance_config {
    enable_secure_boot          = true
    enable_vtpm                 = true
    enable_integrity_monitoring = true
  }

  scheduling {
    provisioning_model          = var.spot ? "SPOT" : "STANDARD"
    preemptible                 = var.spot
    automatic_restart           = !var.spot
    on_host_maintenance         = var.spot ? "TERMINATE" : "MIGRATE"
    instance_termination_action = var.spot ? "DELETE" : null
  }

  metadata = {
    startup-script         = var.startup_script
    ssh-keys               = "sinergym:${trimspace(var.ssh_public_key)}"
    block-project-ssh-keys = "true"
    enable-oslogin         = "FALSE"
    serial-port-enable     = "FALSE"
    google-logging-enabled = "true"
    # The guest agent publishes the host keys as guest attributes (hostkeys/): dispatch reads them
    # there through Compute (instances.getGuestAttributes), never from the VM's own message.
    enable-guest-attributes = "TRUE"
    sinergym-trainer-image  = var.image
    sinergym-ready-topic    = var.ready_topic
    sinergym-mlflow-uri     = var.mlflow_uri
    # The *name* of the Secret Manager version holding the W&B API key; the trainer reads the value.
    sinergym-wandb-secret = var.wandb_secret
  }

  lifecycle {
    create_before_destroy = false
  }
}
