"""The seeded soak: many faults at once, for minutes, with an invariant checker that runs the whole time.

``python -m tests.soak --seed S --minutes M`` (``make soak SEED=S MINUTES=M``) starts a local cloud
(gce profile, Google's limits on, times scaled down), submits rounds of batches of every kind
(``workload``: plain ones, one with ``--max-parallel``, one with ``--max-vm-hours``, a sweep with a
pruner, one over two zones, one cancelled half-way) whose VMs run the trainer's stand-in
(bench/trainer_like.py), and meanwhile:

- ``plan`` draws the faults from the seed alone: which kinds, when (seconds after the first batch
  launched), for how long, with what parameters; the same seed gives the same plan;
- ``nemesis`` injects them, several at a time, through the local cloud's own controls (the Compute
  emulator's, Cloud Storage's front, the push delivery's faults file, the services' processes);
- ``checker`` reads the clouds' own state every second (``observe``: the Compute emulator, the state
  and results buckets behind the front, MLflow, the Monitoring emulator's alerts, the stand-in's
  per-boot markers) and records every invariant broken, with the faults active at that moment;
- ``report`` prints the table and, last, one JSON line; the exit code is 0 only with no violation.

docs/design.md ("The soak") says why each piece is as it is. Nothing here is imported by the product.
"""
