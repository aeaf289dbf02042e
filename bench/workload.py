"""A short synthetic workload for the control-plane benchmark, in place of the trainer.

The benchmark measures the control plane (ready -> trainer started, completion -> deleteInstances,
batch done -> group deleted) for up to 50 experiments at once, which 50 real EnergyPlus trainers
would drown on two cores. This workload behaves like the trainer towards the control plane: it is
started by the same VM agent from the same TrainerSpec, waits a moment, and publishes the same
Completion message. It is only ever used by bench/ (SINERGYM_TRAINER_MODULE=bench.workload).
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import time
from pathlib import Path
from typing import Any


def main(argv: list[str]) -> int:
    # Like the trainer, the Pub/Sub client is built at start, so the completion goes out at once.
    from sinergym_cloud import contracts, names, signing
    from sinergym_cloud.clients import Clients
    from sinergym_cloud.config import Settings
    from sinergym_cloud.contracts import Completion, TrainerSpec

    spec = TrainerSpec.model_validate_json(Path(argv[argv.index("--spec") + 1]).read_text())
    clients = Clients(Settings.from_env({**os.environ, "GOOGLE_CLOUD_PROJECT": spec.project}))
    clients.publisher  # noqa: B018 - a cached property, read for its side effect
    started = dt.datetime.now(dt.UTC)
    time.sleep(float(os.environ.get("BENCH_WORK_SECONDS", "2")))
    message = Completion(
        batch_id=spec.batch_id,
        experiment_index=spec.experiment_index,
        experiment_name=spec.experiment_name,
        instance=spec.instance,
        zone=spec.zone,
        boot_id=spec.boot_id,
        status="succeeded",
        exit_reason="benchmark workload",
        started_at=started,
        finished_at=dt.datetime.now(dt.UTC),  # the latency of cleanup is measured from here
    )
    data = contracts.dump(message)
    signed: dict[str, Any] = (
        {signing.SIGNATURE_ATTRIBUTE: signing.sign(spec.completion_key, data)} if spec.completion_key else {}
    )
    clients.publish(names.TOPIC_COMPLETIONS, data, **signed)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
