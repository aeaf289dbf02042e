"""The messages that cross a boundary: Batch, Experiment, InstanceReady, Completion, Progress,
TrainerSpec, and the events of the ``batch-events`` topic (BatchEvent).

Every message is a versioned pydantic model. Experiments are structured: no field is ever a shell
string, and every string field has a pattern that admits no shell metacharacter, so a message
cannot smuggle a command onto a VM even if some later code forgot to quote. Each field carries its
bounds, its help and, for an option, its flag (``options.Option``); docs/batch.schema.json is
generated from these models.

Schema versions. Batch: 2 adds the Sinergym-config fields and max_parallel, 3 zones, max_vm_hours
and the sweep, 4 ``retry_of``; 1 to 3 are still read (``schema_versions()``). Completion: 2 adds the status
``pruned``; 1 is still read. TrainerSpec: 2 adds the boot's keys, the queue's and the sweep's
fields (``TRAINER_SPEC_V2``); 1 is still read.

The modules, by concern (import the names from here; every part of the project may):

- ``base``: ``Strict``, the shared field types, the size limits, ``parse`` and ``dump``;
- ``parameters``: an algorithm's arguments (``Hyperparameters``, ``AlgorithmParameters``);
- ``paths``: where an experiment may write;
- ``experiment``: ``Experiment`` and its Sinergym-config parts, ``experiment_name``;
- ``batch``: ``Batch``;
- ``messages``: ``InstanceReady``, ``TokenRefresh``, ``Completion``, ``Progress``, ``TrainerSpec``;
- ``events``: ``BatchEvent``, what the ``batch-events`` topic tells other services.
"""

from sinergym_cloud.contracts.base import (
    MAX_EXPERIMENTS,
    MAX_MESSAGE_BYTES,
    MAX_ZONES,
    SCHEMA_VERSION,
    BatchId,
    BucketName,
    ExperimentStatus,
    GceName,
    GroupName,
    Label,
    SafePath,
    Strict,
    Zone,
    check_size,
    dump,
    excerpt,
    parse,
    schema_versions,
    summarise,
)
from sinergym_cloud.contracts.batch import Batch, RetryOf
from sinergym_cloud.contracts.events import (
    EVENTS,
    BatchEvent,
    BatchFinished,
    BatchRejected,
    ExperimentChanged,
    Failure,
    FieldError,
    Mlflow,
    event_schema,
)
from sinergym_cloud.contracts.experiment import (
    V2_EXPERIMENT_FIELDS,
    EnvParams,
    Experiment,
    InitialModel,
    WandbArtifact,
    Wrapper,
    experiment_name,
)
from sinergym_cloud.contracts.messages import (
    TRAINER_SPEC_V2,
    Completion,
    InstanceReady,
    Progress,
    TokenRefresh,
    TrainerSpec,
)
from sinergym_cloud.contracts.parameters import (
    NOISE_ALGORITHMS,
    ActionNoise,
    AlgorithmParameters,
    ConfigValue,
    Hyperparameters,
    PolicyKwargs,
    SharedParameters,
    hyperparameter_algorithms,
)
from sinergym_cloud.contracts.paths import PATH_FIELDS, PATH_RULE, path_outside, path_problem, run_folder

__all__ = [
    "EVENTS",
    "MAX_EXPERIMENTS",
    "MAX_MESSAGE_BYTES",
    "MAX_ZONES",
    "NOISE_ALGORITHMS",
    "PATH_FIELDS",
    "PATH_RULE",
    "SCHEMA_VERSION",
    "TRAINER_SPEC_V2",
    "V2_EXPERIMENT_FIELDS",
    "ActionNoise",
    "AlgorithmParameters",
    "Batch",
    "BatchEvent",
    "BatchFinished",
    "BatchId",
    "BatchRejected",
    "BucketName",
    "Completion",
    "ConfigValue",
    "EnvParams",
    "Experiment",
    "ExperimentChanged",
    "ExperimentStatus",
    "Failure",
    "FieldError",
    "GceName",
    "GroupName",
    "Hyperparameters",
    "InitialModel",
    "InstanceReady",
    "Label",
    "Mlflow",
    "PolicyKwargs",
    "Progress",
    "RetryOf",
    "SafePath",
    "SharedParameters",
    "Strict",
    "TokenRefresh",
    "TrainerSpec",
    "WandbArtifact",
    "Wrapper",
    "Zone",
    "check_size",
    "dump",
    "event_schema",
    "excerpt",
    "experiment_name",
    "hyperparameter_algorithms",
    "parse",
    "path_outside",
    "path_problem",
    "run_folder",
    "schema_versions",
    "summarise",
]
