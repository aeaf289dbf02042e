"""Who may do what on the local cloud: the roles ``infra/terraform/iam.tf`` grants, read from that file.

The local cloud enforces what the deployment grants, so that a role missing from the Terraform fails a
test here instead of a first deployment. ``Policy.load()`` reads iam.tf (and the topic and bucket
names main.tf gives them) with python-hcl2 and expands each ``*_iam_member`` resource, its
``for_each`` included, into bindings: a component (the service account's key in ``local.service_accounts``,
or ``operator`` for the people who run the publisher) holds a role on a scope (the project, a bucket,
a topic, a secret, a service account), perhaps under a condition. A role is a predefined one
(``PREDEFINED``: its permissions as Google's IAM reference lists them, the subset this project meets)
or one of iam.tf's custom roles. ``Policy.allows`` answers one request: the binding that grants the
permission on the resource, or None.

Conditions: the subset of CEL that iam.tf and the trainers' access boundaries use,
``resource.name.startsWith("...")``, ``resource.name.extract("/objects/{x}/") != ""``, ``&&``, ``||``
and parentheses, parsed (never evaluated as code).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TERRAFORM = REPO / "infra" / "terraform"

# Google's predefined roles this deployment grants, with the permissions of each that the product's
# calls can need (https://cloud.google.com/iam/docs/understanding-roles).
PREDEFINED: dict[str, frozenset[str]] = {
    "roles/storage.objectUser": frozenset(
        {
            "storage.objects.create",
            "storage.objects.delete",
            "storage.objects.get",
            "storage.objects.list",
            "storage.objects.restore",
            "storage.objects.update",
            "storage.multipartUploads.abort",
            "storage.multipartUploads.create",
            "storage.multipartUploads.list",
            "storage.multipartUploads.listParts",
        }
    ),
    "roles/storage.objectViewer": frozenset({"storage.objects.get", "storage.objects.list"}),
    "roles/storage.objectCreator": frozenset({"storage.objects.create", "storage.multipartUploads.create"}),
    "roles/storage.objectAdmin": frozenset(
        {
            "storage.objects.create",
            "storage.objects.delete",
            "storage.objects.get",
            "storage.objects.getIamPolicy",
            "storage.objects.list",
            "storage.objects.setIamPolicy",
            "storage.objects.update",
        }
    ),
    "roles/pubsub.publisher": frozenset({"pubsub.topics.publish"}),
    "roles/pubsub.subscriber": frozenset(
        {"pubsub.subscriptions.consume", "pubsub.subscriptions.get", "pubsub.topics.attachSubscription"}
    ),
    "roles/pubsub.viewer": frozenset(
        {"pubsub.subscriptions.get", "pubsub.subscriptions.list", "pubsub.topics.get", "pubsub.topics.list"}
    ),
    "roles/monitoring.metricWriter": frozenset(
        {
            "monitoring.metricDescriptors.create",
            "monitoring.metricDescriptors.get",
            "monitoring.metricDescriptors.list",
            "monitoring.monitoredResourceDescriptors.get",
            "monitoring.monitoredResourceDescriptors.list",
            "monitoring.timeSeries.create",
        }
    ),
    "roles/monitoring.viewer": frozenset(
        {
            "monitoring.alertPolicies.get",
            "monitoring.alertPolicies.list",
            "monitoring.metricDescriptors.get",
            "monitoring.metricDescriptors.list",
            "monitoring.timeSeries.list",
        }
    ),
    "roles/logging.logWriter": frozenset({"logging.logEntries.create", "logging.logEntries.route"}),
    "roles/secretmanager.secretAccessor": frozenset({"secretmanager.versions.access"}),
    "roles/iam.serviceAccountUser": frozenset(
        {"iam.serviceAccounts.actAs", "iam.serviceAccounts.get", "iam.serviceAccounts.list"}
    ),
    "roles/artifactregistry.reader": frozenset(
        {"artifactregistry.repositories.downloadArtifacts", "artifactregistry.repositories.get"}
    ),
    "roles/cloudsql.client": frozenset({"cloudsql.instances.connect", "cloudsql.instances.get"}),
}

MEMBER = re.compile(r'google_service_account\.sa\[(?:"(?P<name>[a-z_-]+)"|each\.(?P<each>key|value))\]\.email')


@dataclass(frozen=True)
class Resource:
    """What a request acts on: ``kind`` project, bucket, topic, subscription, secret or
    serviceAccount; its ``name`` (a bucket, a topic); an object inside a bucket."""

    kind: str
    name: str = ""
    object: str = ""

    @property
    def full_name(self) -> str:
        """The resource's name as IAM conditions see it (``resource.name``)."""
        if self.kind == "bucket":
            base = f"projects/_/buckets/{self.name}"
            return f"{base}/objects/{self.object}" if self.object else base
        return f"projects/_/{self.kind}s/{self.name}"


@dataclass(frozen=True)
class Binding:
    member: str  # a component: launch, dispatch, cleanup, sweeper, trainer, mlflow, operator
    role: str  # roles/... or the custom role's key (e.g. group_operator)
    scope: Resource  # kind "project": the whole project
    condition: str | None = None
    source: str = ""  # the Terraform resource that grants it

    def covers(self, resource: Resource) -> bool:
        if self.scope.kind == "project":
            return True
        if self.scope.kind != resource.kind or self.scope.name != resource.name:
            return False
        return self.condition is None or condition_holds(self.condition, resource.full_name)


@dataclass
class Policy:
    bindings: list[Binding] = field(default_factory=list)
    custom_roles: dict[str, frozenset[str]] = field(default_factory=dict)

    def role_permissions(self, role: str) -> frozenset[str]:
        return self.custom_roles.get(role) or PREDEFINED.get(role, frozenset())

    def allows(self, member: str, permission: str, resource: Resource) -> Binding | None:
        """The binding that grants ``member`` ``permission`` on ``resource``, or None."""
        for binding in self.bindings:
            if (
                binding.member == member
                and permission in self.role_permissions(binding.role)
                and binding.covers(resource)
            ):
                return binding
        return None

    def granted(self, member: str) -> dict[str, list[Binding]]:
        """Every permission ``member`` holds, with the bindings that grant it (the audit's right column)."""
        out: dict[str, list[Binding]] = {}
        for binding in self.bindings:
            if binding.member == member:
                for permission in self.role_permissions(binding.role):
                    out.setdefault(permission, []).append(binding)
        return out

    def without(self, member: str, role: str) -> Policy:
        """This policy with ``member``'s grants of ``role`` removed (a test taking one role away)."""
        kept = [b for b in self.bindings if not (b.member == member and b.role == role)]
        return Policy(kept, dict(self.custom_roles))

    def secrets_of(self, member: str) -> set[str]:
        """The secrets ``member`` may read (Secret Manager's accessor role on each)."""
        return {
            b.scope.name
            for b in self.bindings
            if b.member == member
            and b.scope.kind == "secret"
            and "secretmanager.versions.access" in self.role_permissions(b.role)
        }

    def members(self) -> list[str]:
        return sorted({b.member for b in self.bindings})

    @classmethod
    def load(cls, terraform: Path = TERRAFORM, buckets: dict[str, str] | None = None) -> Policy:
        """The bindings iam.tf makes, the buckets named as the local cloud names them (``buckets``:
        the Terraform bucket resource's name -> the local bucket)."""
        parsed = _load_all(terraform)
        topics = _topics(parsed)
        buckets = buckets or {}
        policy = cls()
        for resource_type, name, body in _resources(parsed):
            if resource_type == "google_project_iam_custom_role":
                policy.custom_roles[name] = frozenset(_unquote(p) for p in body.get("permissions", []))
        for resource_type, name, body in _resources(parsed):
            if not resource_type.endswith("_iam_member"):
                continue
            for each_key, each_value in _for_each(body.get("for_each"), parsed):
                member = _member(_unquote(body["member"]), each_key, each_value)
                if member is None:
                    continue
                role = _role(_unquote(body["role"]))
                scope = _scope(resource_type, body, each_key, each_value, topics=topics, buckets=buckets)
                condition = None
                for block in body.get("condition") or []:
                    condition = _resolve(_unquote(block["expression"]).replace('\\"', '"'), buckets)
                policy.bindings.append(Binding(member, role, scope, condition, f"{resource_type}.{name}"))
        return policy


# ------------------------------------------------------------------------- Terraform, as data
def _load_all(folder: Path) -> dict[str, Any]:
    """Every .tf file of the root module, merged (blocks of a kind appended in file order)."""
    import hcl2

    merged: dict[str, Any] = {}
    for path in sorted(folder.glob("*.tf")):
        with path.open() as f:
            for key, value in hcl2.load(f).items():
                merged.setdefault(key, []).extend(value)
    return merged


def _unquote(value: Any) -> Any:
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def _resources(parsed: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    out = []
    for block in parsed.get("resource", []):
        for rtype, instances in block.items():
            for name, body in instances.items():
                out.append((_unquote(rtype), _unquote(name), body))
    return out


def _locals(parsed: dict[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for block in parsed.get("locals", []):
        merged.update({k: v for k, v in block.items() if not k.startswith("__")})
    return merged


def _for_each(value: Any, parsed: dict[str, Any]) -> list[tuple[str, str]]:
    """(each.key, each.value) of a resource's ``for_each``: one ("", "") for a resource without it."""
    if value is None:
        return [("", "")]
    if isinstance(value, dict):
        return [(_unquote(k), _unquote(v)) for k, v in value.items() if not k.startswith("__")]
    text = str(value)
    listed = re.fullmatch(r"\$\{toset\(\[(?P<items>[^\]]*)\]\)\}", text)
    if listed:
        items = [i.strip().strip('"') for i in listed["items"].split(",") if i.strip()]
        return [(i, i) for i in items]
    if re.fullmatch(r"\$\{toset\(var\.operators\)\}", text):
        return [("operator", "operator")]  # the people who run the publisher: one identity locally
    if "var." in text:
        return []  # members a deployment names (another service's account): none of the local components
    named = re.fullmatch(r"\$\{toset\(local\.(?P<name>[a-z_]+)\)\}", text)
    if named:
        items = [_unquote(i) for i in _locals(parsed)[named["name"]]]
        return [(i, i) for i in items]
    raise ValueError(f"iam.tf: a for_each the local cloud cannot expand: {text}")


def _member(text: str, each_key: str, each_value: str) -> str | None:
    """The component a ``member`` names (None: not one of the deployment's own accounts)."""
    if text == "${each.value}" and each_value == "operator":
        return "operator"
    if text.startswith("var.") or "${var." in text:
        return None
    m = MEMBER.search(text)
    if m is None:
        return None
    if m["name"]:
        return str(m["name"])
    return each_key if m["each"] == "key" else each_value


def _role(text: str) -> str:
    custom = re.fullmatch(r"\$\{google_project_iam_custom_role\.(?P<name>[a-z_]+)\.id\}", text)
    return custom["name"] if custom else text


def _scope(  # noqa: PLR0911 - one return per kind of IAM member resource
    rtype: str, body: dict[str, Any], each_key: str, each_value: str, *, topics: dict[str, str], buckets: dict[str, str]
) -> Resource:
    if rtype == "google_storage_bucket_iam_member":
        ref = re.fullmatch(r"\$\{google_storage_bucket\.(?P<name>[a-z_]+)\.name\}", _unquote(body["bucket"]))
        name = ref["name"] if ref else _unquote(body["bucket"])
        return Resource("bucket", buckets.get(name, name))
    if rtype == "google_pubsub_topic_iam_member":
        own = re.fullmatch(r"\$\{google_pubsub_topic\.(?P<name>[a-z_]+)\.(id|name)\}", _unquote(body["topic"]))
        if own is not None:
            return Resource("topic", topics[f"resource:{own['name']}"])
        ref = re.fullmatch(
            r"\$\{module\.topics\[(?:each\.(?P<each>key|value)|\"(?P<key>[a-z_]+)\")\]\.(?P<attr>topic_id|dead_letter_topic_id)\}",
            _unquote(body["topic"]),
        )
        if ref is None:
            raise ValueError(f"iam.tf: a topic the local cloud cannot resolve: {body['topic']}")
        key = ref["key"] or (each_key if ref["each"] == "key" else each_value)
        topic = topics[key]
        return Resource("topic", f"{topic}-dead-letter" if ref["attr"] == "dead_letter_topic_id" else topic)
    if rtype == "google_secret_manager_secret_iam_member":
        ref = re.search(r"google_secret_manager_secret\.(?P<name>[a-z_]+)\.", _unquote(body["secret_id"]))
        return Resource("secret", ref["name"] if ref else _unquote(body["secret_id"]))
    if rtype == "google_service_account_iam_member":
        ref = re.search(r'sa\["(?P<name>[a-z_]+)"\]', _unquote(body["service_account_id"]))
        return Resource("serviceAccount", ref["name"] if ref else "")
    if rtype == "google_project_iam_member":
        return Resource("project")
    return Resource(rtype.removeprefix("google_").removesuffix("_iam_member"), "")


def _topics(parsed: dict[str, Any]) -> dict[str, str]:
    """Each topic's Terraform reference -> its name: the keys of ``local.topics`` (main.tf, made by
    ``module.topics``), and ``google_pubsub_topic.X`` resources as ``resource:X``."""
    topics = _locals(parsed).get("topics") or {}
    found = {_unquote(k): _unquote(v) for k, v in topics.items() if not k.startswith("__")}
    for rtype, name, body in _resources(parsed):
        if rtype == "google_pubsub_topic":
            found[f"resource:{name}"] = _unquote(body["name"])
    return found


def _resolve(expression: str, buckets: dict[str, str]) -> str:
    """A condition's ``${google_storage_bucket.X.name}`` references, as the local buckets."""

    def bucket(m: re.Match[str]) -> str:
        return buckets.get(m["name"], m["name"])

    return re.sub(r"\$\{google_storage_bucket\.(?P<name>[a-z_]+)\.name\}", bucket, expression)


# ------------------------------------------------------------------------- conditions (CEL subset)
_TOKEN = re.compile(
    r"\s*(?:(?P<and>&&)|(?P<or>\|\|)|(?P<open>\()|(?P<close>\))|"
    r"resource\.name\.startsWith\(\s*(?P<q1>[\"'])(?P<prefix>.*?)(?P=q1)\s*\)|"
    r"resource\.name\.extract\(\s*(?P<q2>[\"'])(?P<template>.*?)(?P=q2)\s*\)\s*!=\s*(?:\"\"|'')"
    r")"
)


def condition_holds(expression: str, name: str) -> bool:
    """Whether an IAM condition holds for a resource of this full name. Unknown syntax raises
    ValueError naming it: a condition the local cloud cannot read is a bug to fix, not a pass."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expression):
        m = _TOKEN.match(expression, pos)
        if m is None or m.end() == pos:
            if expression[pos:].strip() == "":
                break
            raise ValueError(f"an IAM condition the local cloud cannot read at {expression[pos : pos + 40]!r}")
        kind = next(k for k, v in m.groupdict().items() if v is not None and k not in ("q1", "q2"))
        tokens.append((kind, m[kind]))
        pos = m.end()
    value, rest = _or(tokens, name)
    if rest:
        raise ValueError(f"an IAM condition the local cloud cannot read: {expression!r}")
    return value


def _or(tokens: list[tuple[str, str]], name: str) -> tuple[bool, list[tuple[str, str]]]:
    value, rest = _and(tokens, name)
    while rest and rest[0][0] == "or":
        right, rest = _and(rest[1:], name)
        value = value or right
    return value, rest


def _and(tokens: list[tuple[str, str]], name: str) -> tuple[bool, list[tuple[str, str]]]:
    value, rest = _atom(tokens, name)
    while rest and rest[0][0] == "and":
        right, rest = _atom(rest[1:], name)
        value = value and right
    return value, rest


def _atom(tokens: list[tuple[str, str]], name: str) -> tuple[bool, list[tuple[str, str]]]:
    if not tokens:
        raise ValueError("an IAM condition ends too early")
    kind, text = tokens[0]
    if kind == "open":
        value, rest = _or(tokens[1:], name)
        if not rest or rest[0][0] != "close":
            raise ValueError("an IAM condition with an unclosed parenthesis")
        return value, rest[1:]
    if kind == "prefix":
        return name.startswith(text), tokens[1:]
    if kind == "template":
        return _extract(text, name) != "", tokens[1:]
    raise ValueError(f"an IAM condition with {text!r} where a test was expected")


def _extract(template: str, name: str) -> str:
    """CEL's ``extract``: the text where ``{x}`` stands in ``template``, found in ``name`` ("" if not)."""
    m = re.fullmatch(r"(?P<before>[^{]*)\{[a-z_]+\}(?P<after>.*)", template)
    if m is None:
        raise ValueError(f"an IAM condition's extract template the local cloud cannot read: {template!r}")
    start = name.find(m["before"])
    if start < 0:
        return ""
    start += len(m["before"])
    if not m["after"]:
        return name[start:]
    end = name.find(m["after"], start)
    return name[start:end] if end > start else ""
