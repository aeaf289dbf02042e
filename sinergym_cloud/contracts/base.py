"""The ground every message stands on: the base model (``Strict``), the field types shared by
several messages, the size limits, and decoding (``parse``) and encoding (``dump``)."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from sinergym_cloud import names
from sinergym_cloud.errors import BadMessage

SCHEMA_VERSION = 1  # of InstanceReady
# Batch: 2 adds the Sinergym-config fields and max_parallel, 3 zones, max_vm_hours and the sweep, 4
# retry_of; 1 to 3 are still read (schema_versions()). Completion: 2 adds the status ``pruned``; 1 is still read.
# TrainerSpec: 2 adds the boot's keys, the queue's and the sweep's fields (TRAINER_SPEC_V2); 1 is still read.
MAX_EXPERIMENTS = 5000
MAX_ZONES = 8
MAX_MESSAGE_BYTES = 4 * 1024 * 1024

GceName = Annotated[str, Field(pattern=names.GCE_NAME.pattern, max_length=63)]
GroupName = Annotated[str, Field(pattern=names.GROUP_NAME.pattern, max_length=40)]
BatchId = Annotated[str, Field(pattern=names.BATCH_ID.pattern, max_length=63)]
Zone = Annotated[str, Field(pattern=r"^[a-z]+-[a-z]+[0-9]+-[a-z]$", max_length=40)]
BucketName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{1,61}[a-z0-9]$")]
# A local directory or a gs:// URI: letters, digits and . _ - / only.
SafePath = Annotated[str, Field(pattern=r"^(gs://[a-z0-9][a-z0-9_.-]{1,61}[a-z0-9])?[A-Za-z0-9_./-]*$", max_length=512)]
Label = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:@ -]*$", max_length=200)]
ExperimentStatus = Literal["succeeded", "failed", "preempted", "pruned"]


class Strict(BaseModel):
    """Unknown fields are errors, not silently dropped: a typo must not change what runs.

    Booleans are not numbers either: ``"episodes": true`` is a mistake, not one episode.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_as_number(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool) and info.field_name:
            annotation = cls.model_fields[info.field_name].annotation
            if bool not in get_args(annotation) and annotation is not bool:
                raise ValueError(f"expected {getattr(annotation, '__name__', annotation)}, not a boolean")
        return value


def field_errors(error: ValidationError, limit: int = 20) -> list[tuple[str, str]]:
    """(dotted field path, message) of each problem pydantic found, the first ``limit``."""
    found = []
    for item in error.errors()[:limit]:
        where = ".".join(str(p)[:40] for p in item["loc"])[:200]
        found.append((where, item["msg"].removeprefix("Value error, ")[:500]))
    return found


def summarise(error: ValidationError) -> str:
    parts = []
    for item in error.errors()[:5]:
        message = item["msg"].removeprefix("Value error, ")[:300]
        where = ".".join(str(p)[:40] for p in item["loc"])[:120]
        parts.append(f"{where}: {message}" if where else message)
    more = error.error_count() - 5
    if more > 0:
        parts.append(f"... and {more} more")
    return "; ".join(parts)


def check_size(data: bytes | str) -> None:
    """Refuse a message over MAX_MESSAGE_BYTES before anything decodes it."""
    size = len(data)
    if size > MAX_MESSAGE_BYTES:
        raise BadMessage(f"message is {size} bytes; the limit is {MAX_MESSAGE_BYTES}")


def excerpt(value: Any, limit: int = 40) -> str:
    """A short, printable quote of a value for an error message (never the whole of it)."""
    if not isinstance(value, (str, int, float, bool)) or value is None:
        return f"a {type(value).__name__}"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse[M: BaseModel](model: type[M], data: bytes | str | dict[str, Any]) -> M:
    """Decode and validate a message, raising BadMessage with a reason a human can act on.

    Every decoding failure is a BadMessage (dead-lettered, never retried): invalid UTF-8, invalid
    JSON, JSON nested too deep for the parser (RecursionError), a message over the size limit."""
    if isinstance(data, bytes):
        check_size(data)
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadMessage(f"message is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    if isinstance(data, str):
        check_size(data)
        try:
            data = json.loads(data)
        except json.JSONDecodeError as exc:
            raise BadMessage(f"message is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
        except RecursionError:
            raise BadMessage("message is JSON nested too deeply to decode") from None
    if not isinstance(data, dict):
        raise BadMessage(f"message must be a JSON object, not {type(data).__name__}")
    accepted = schema_versions(model)
    version = data.get("schema_version", min(accepted, default=SCHEMA_VERSION))
    if accepted and (version not in accepted or isinstance(version, bool)):
        readable = " or ".join(str(v) for v in accepted)
        raise BadMessage(
            f"unsupported schema_version {excerpt(version)}; this deployment reads {model.__name__} version {readable}"
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise BadMessage(f"invalid {model.__name__}: {summarise(exc)}", fields=field_errors(exc)) from None
    except RecursionError:
        raise BadMessage(f"invalid {model.__name__}: nested too deeply") from None


def schema_versions(model: type[BaseModel]) -> tuple[int, ...]:
    """The schema versions of a message this deployment reads (its ``schema_version`` literal)."""
    field = model.model_fields.get("schema_version")
    return tuple(sorted(v for v in get_args(field.annotation) if isinstance(v, int))) if field else ()


def dump(message: BaseModel) -> bytes:
    """The wire form of a message: compact JSON, unset optional fields left out."""
    return message.model_dump_json(exclude_none=True).encode()
