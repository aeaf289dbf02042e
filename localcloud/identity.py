"""Identities on the local cloud: who a request comes from, whether the policy lets it, and the audit.

Each component gets a credential of its own service account, as on Google Cloud: a bearer token
(``<state dir>/iam/tokens.json``, 0600) that names its member (``launch``, ``dispatch``, ``cleanup``,
``sweeper``, ``trainer``, ``operator`` for the people running the publisher, ``admin`` for what
Terraform and the test harness do). A token minted by the local STS (``/v1/token``, a token exchange
with a Credential Access Boundary, as ``google.auth.downscoped`` asks Google's STS) carries its
source's member, its expiry and its boundary: the rules that further restrict it to some objects of
some buckets.

``Gate`` is what each emulator's front asks for every request: ``check(authorization header,
permission, resource)`` gives the ``Decision`` (allowed or not, who, by which binding or rule) and
appends one line to ``<state dir>/iam/audit.jsonl``, the record ``tests/test_iam.py`` audits.
The policy comes from iam.tf (iam.py), written to ``<state dir>/iam/policy.json`` when the local
cloud starts; a test takes a role away by writing another (``LocalCloud.set_policy``). Every file is
read again when it changes.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from localcloud.iam import Binding, Policy, Resource, condition_holds

ADMIN = "admin"  # Terraform's identity, and the test harness's: every permission
MODES = ("enforce", "audit", "off")  # audit: every decision recorded, nothing refused
COMPONENTS = ("launch", "dispatch", "cleanup", "sweeper", "trainer", "operator", "pubsub", ADMIN)
PUBSUB_AGENT = "pubsub"  # Pub/Sub itself, pushing subscriptions and moving dead letters


def email(member: str, project: str) -> str:
    """The service account a member stands for, as Google names it."""
    if member == "operator":
        return f"operator@{project}.local"
    if member == PUBSUB_AGENT:
        return f"service-pubsub@{project}.iam.gserviceaccount.com"
    return f"sinergym-{member}@{project}.iam.gserviceaccount.com"


@dataclass(frozen=True)
class Rule:
    """One rule of a Credential Access Boundary: a bucket, the role whose permissions it leaves, and
    the condition on the objects' names (``availabilityCondition.expression``)."""

    bucket: str
    role: str
    expression: str | None = None

    def allows(self, policy: Policy, permission: str, resource: Resource) -> bool:
        if resource.kind != "bucket" or resource.name != self.bucket:
            return False
        if permission not in policy.role_permissions(self.role):
            return False
        return self.expression is None or condition_holds(self.expression, resource.full_name)


@dataclass(frozen=True)
class Token:
    member: str
    expires: float | None = None  # seconds since the epoch; None: does not expire
    boundary: tuple[Rule, ...] | None = None  # a downscoped token's rules

    def as_json(self) -> dict[str, Any]:
        return {
            "member": self.member,
            "expires": self.expires,
            "boundary": [asdict(r) for r in self.boundary] if self.boundary is not None else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Token:
        rules = data.get("boundary")
        return cls(
            member=data["member"],
            expires=data.get("expires"),
            boundary=tuple(Rule(**r) for r in rules) if rules is not None else None,
        )


@dataclass(frozen=True)
class Decision:
    allowed: bool
    member: str  # "" when the request named no valid token
    permission: str
    resource: Resource
    why: str  # the binding (and boundary rule) that allowed it, or why not

    def denial(self, project: str) -> str:
        """Google's words for a refusal, naming the principal and the permission."""
        who = email(self.member, project) if self.member else "anonymous caller"
        return (
            f"{who} does not have {self.permission} access to {self.resource.full_name}: "
            f"Permission '{self.permission}' denied on resource (or it may not exist). {self.why}"
        )


class _Watched:
    """A JSON file read again when it changes (one stat per call otherwise)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._key: tuple[float, int] | None = None
        self._value: Any = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        key = (stat.st_mtime, stat.st_size)
        with self._lock:
            if key != self._key:
                self._value = json.loads(self.path.read_text())
                self._key = key
            return self._value


def iam_dir(state_dir: Path) -> Path:
    return state_dir / "iam"


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    tmp.replace(path)


def write_policy(state_dir: Path, policy: Policy, mode: str = "enforce") -> None:
    """Make ``policy`` the local cloud's (every front reads it again when it changes)."""
    if mode not in MODES:
        raise ValueError(f"unknown LOCALCLOUD_IAM {mode!r}: choose one of {', '.join(MODES)}")
    write_json(iam_dir(state_dir) / "policy.json", {"mode": mode, **policy_to_json(policy)})


def read_policy(state_dir: Path) -> Policy:
    return policy_from_json(json.loads((iam_dir(state_dir) / "policy.json").read_text()))


def policy_to_json(policy: Policy) -> dict[str, Any]:
    return {
        "custom_roles": {k: sorted(v) for k, v in policy.custom_roles.items()},
        "bindings": [
            {
                "member": b.member,
                "role": b.role,
                "scope": asdict(b.scope),
                "condition": b.condition,
                "source": b.source,
            }
            for b in policy.bindings
        ],
    }


def policy_from_json(data: dict[str, Any]) -> Policy:
    return Policy(
        bindings=[
            Binding(b["member"], b["role"], Resource(**b["scope"]), b.get("condition"), b.get("source", ""))
            for b in data["bindings"]
        ],
        custom_roles={k: frozenset(v) for k, v in data["custom_roles"].items()},
    )


def new_tokens(state_dir: Path) -> dict[str, str]:
    """A token per component (member -> token), written to the registry; the registry's previous
    content (minted tokens of an earlier run) is dropped."""
    tokens = {member: f"local-{member}-{secrets.token_hex(16)}" for member in COMPONENTS}
    write_json(iam_dir(state_dir) / "tokens.json", {t: Token(m).as_json() for m, t in tokens.items()})
    return tokens


class Gate:
    """The identity and permission check of one emulator's front, and its audit trail."""

    def __init__(self, state_dir: Path | None = None, service: str = "") -> None:
        base = state_dir or (Path(os.environ["LOCALCLOUD_DIR"]) if os.environ.get("LOCALCLOUD_DIR") else None)
        self.dir = iam_dir(base) if base else None
        self.service = service
        self._tokens = _Watched(self.dir / "tokens.json") if self.dir else None
        self._policy = _Watched(self.dir / "policy.json") if self.dir else None
        self._minted: dict[str, Token] = {}  # tokens this process minted (its STS), kept in memory too
        self._lock = threading.Lock()
        self._cached_policy: tuple[Any, Policy] | None = None

    @property
    def enforced(self) -> bool:
        """Whether requests are checked (and recorded) at all: a policy was written, not in mode off."""
        raw = self._policy.get() if self._policy is not None else None
        return raw is not None and raw.get("mode", "enforce") != "off"

    def policy(self) -> Policy:
        assert self._policy is not None
        raw = self._policy.get()
        if self._cached_policy is None or self._cached_policy[0] is not raw:
            self._cached_policy = (raw, policy_from_json(raw))
        return self._cached_policy[1]

    def _mode(self) -> str:
        raw = self._policy.get() if self._policy is not None else None
        return str((raw or {}).get("mode", "enforce"))

    def token(self, authorization: str | None) -> Token | None:
        """The token an ``Authorization: Bearer ...`` header carries, if it is one of ours and valid."""
        if not authorization or not authorization.lower().startswith("bearer "):
            return None
        value = authorization.split(None, 1)[1].strip()
        with self._lock:
            found = self._minted.get(value)
        if found is None and self._tokens is not None:
            raw = (self._tokens.get() or {}).get(value)
            found = Token.from_json(raw) if raw else None
        if found is None or (found.expires is not None and found.expires < time.time()):
            return None
        return found

    def check(self, authorization: str | None, permission: str, resource: Resource, call: str = "") -> Decision:
        """The decision on one request (``call``: the API method, for the audit), recorded; in audit
        mode a refusal is recorded and let through."""
        token = self.token(authorization)
        decision = self._decide(token, permission, resource)
        self._audit(decision, call, downscoped=token is not None and token.boundary is not None)
        if not decision.allowed and self._mode() == "audit":
            return Decision(True, decision.member, permission, resource, f"audit only: {decision.why}")
        return decision

    def _decide(self, token: Token | None, permission: str, resource: Resource) -> Decision:
        if token is None:
            return Decision(False, "", permission, resource, "The request has no valid credential.")
        if token.member in (ADMIN, PUBSUB_AGENT):  # Terraform and the test harness; Pub/Sub itself
            source = token.member
        else:
            binding = self.policy().allows(token.member, permission, resource)
            if binding is None:
                why = f"No role of infra/terraform/iam.tf grants it to the {token.member} service account."
                return Decision(False, token.member, permission, resource, why)
            source = binding.source
        if token.boundary is not None:  # a downscoped token: never more than its boundary, whoever made it
            rule = next((r for r in token.boundary if r.allows(self.policy(), permission, resource)), None)
            if rule is None:
                why = "The credential's access boundary does not reach this resource."
                return Decision(False, token.member, permission, resource, why)
            return Decision(True, token.member, permission, resource, f"{source} within its boundary")
        return Decision(True, token.member, permission, resource, source)

    def _audit(self, decision: Decision, call: str, downscoped: bool = False) -> None:
        if self.dir is None:
            return
        line = {
            "t": time.time(),
            "service": self.service,
            "call": call,
            "member": decision.member,
            "permission": decision.permission,
            "resource": decision.resource.full_name,
            "allowed": decision.allowed,
            "why": decision.why,
        }
        if downscoped:
            line["downscoped"] = True  # a VM's experiment token, made from ``member``'s credential
        with (self.dir / "audit.jsonl").open("a") as f:
            f.write(json.dumps(line) + "\n")

    def mint(self, source: Token, boundary: tuple[Rule, ...], lifetime: float) -> tuple[str, float]:
        """A downscoped token: the source's member and at most its expiry, restricted to ``boundary``."""
        expires = time.time() + lifetime
        if source.expires is not None:
            expires = min(expires, source.expires)
        value = f"local-downscoped-{secrets.token_hex(24)}"
        token = Token(source.member, expires, boundary)
        with self._lock:
            self._minted[value] = token
            if self.dir is not None and self._tokens is not None:  # every front must know it
                registry = self._tokens.get() or {}
                write_json(self.dir / "tokens.json", {**registry, value: token.as_json()})
        return value, expires
