"""What runs on each VM beside the trainer: ``vm_agent`` (``sinergym-vm``), the one command dispatch
runs over SSH (the VM's identity, then the TrainerSpec that starts the trainer), ``logship``, which
runs the trainer and stores its output in the bucket (and Cloud Logging) while it trains, and
``procinfo``, which the agent and the local cloud use to tell a live trainer from a zombie. The path
is named the same at each hop: dispatch starts a *session*, the agent *starts the trainer* from the
*TrainerSpec*, the trainer runs it (``trainer.run.run_trainer_spec``). It imports the shared
modules, and ``gcp`` (clients, log chunks) in the shipper only.
"""
