"""The cores of the Cloud Functions (``functions/<name>/main.py`` are thin entry points over them):
``launch``, ``dispatch``, ``cleanup``, ``sweeper``, the batch-level operations (``batches``), the queue
(``queue``), a sweep's decisions (``sweeps``, ``sweep_runs``) and the delivery error policy
(``events``). It imports the shared modules and ``gcp``; the functions and the publisher import it,
the trainer and the VM agent never do.
"""
