"""The project's one importable package, grouped by where the code runs.

- This folder's own modules are the shared vocabulary every part imports: the message contracts
  (``contracts``, ``sweep_spec``, ``options``), names (``names``), the state records and the
  experiment state machine (``records``, ``lifecycle``), errors, settings (``config``), signing, and
  the pure decisions (``capacity``, ``budget``, ``sweep``). They import nothing from the subpackages.
- ``gcp``: Google Cloud, built once and passed in (clients, the narrow Compute module, the state
  bucket, Monitoring, SSH, the retry policy). Imports only the shared modules.
- ``control``: the Cloud Functions' cores (launch, dispatch, cleanup, sweeper, the queue, sweeps).
- ``vm``: what runs on each VM beside the trainer (``sinergym-vm``, the agent dispatch talks to).
- ``inputs``: what users write (batch files, original command lines, Sinergym and W&B files) mapped
  onto the contracts; the publisher and the trainer's command line read them.
- ``publisher``: only ``publisher.py`` runs it; never shipped to a function or imported from here.

tests/test_layout.py holds these directions.
"""
