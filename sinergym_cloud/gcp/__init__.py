"""Google Cloud as the control plane and the trainer use it: clients built once (``clients``), the
narrow Compute module (``compute``), the state bucket's compare-and-swap objects (``state``),
Monitoring (``metrics``), SSH to the VMs (``ssh``), the retry policy (``retry``), an experiment's
logs in the results bucket (``logs``) and the bundle a function passes around (``runtime``). It
imports only the shared modules of ``sinergym_cloud``; the functions, the trainer, the VM agent's log
shipper, the publisher and the local cloud import it.
"""
