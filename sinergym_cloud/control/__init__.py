"""The cores of the Cloud Functions (``functions/<name>/main.py`` are thin entry points over them):
``launch``, ``dispatch``, ``cleanup``, ``sweeper``, the batch-level operations (``batches``), the queue
(``queue``), a sweep's decisions (``sweeps``, ``sweep_runs``), the delivery error policy
(``events``), what other services and on-call staff are told (``announce``: the batch-events topic;
``alerts``: the labels of the alerting points) and the batch index ``list`` reads (``batch_index``).
It imports the shared modules and ``gcp``; the functions and the publisher import it, the trainer
and the VM agent never do.
"""
