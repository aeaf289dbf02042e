"""The IAM permission each Compute Engine method needs, as Compute Engine checks it
(https://cloud.google.com/compute/docs/reference/rest/v1, "IAM permissions" of each method), and
the answer when the caller lacks it: 403 ``forbidden``, naming the permission and the resource.

A method that makes VMs (a group's insert, resize, createInstances, recreateInstances) also needs
``iam.serviceAccounts.actAs`` on the service account the VMs will run as (the template's).
"""

from __future__ import annotations

import re
from typing import Any

from localcloud.compute.errors import ApiError
from localcloud.compute.state import State
from localcloud.iam import Resource
from localcloud.identity import Gate

# method -> permission, for every method the emulator serves whose permission is not
# ``compute.<resource>.<verb>`` with the same verb.
SPECIAL = {
    "instanceTemplates.insert": "compute.instanceTemplates.create",
    "instanceGroupManagers.insert": "compute.instanceGroupManagers.create",
    "instanceGroupManagers.aggregatedList": "compute.instanceGroupManagers.list",
    "instanceGroupManagers.listManagedInstances": "compute.instanceGroupManagers.get",
    "instanceGroupManagers.listErrors": "compute.instanceGroupManagers.get",
    "instanceGroupManagers.resize": "compute.instanceGroupManagers.update",
    "instanceGroupManagers.createInstances": "compute.instanceGroupManagers.update",
    "instanceGroupManagers.deleteInstances": "compute.instanceGroupManagers.update",
    "instanceGroupManagers.recreateInstances": "compute.instanceGroupManagers.update",
    "instanceGroups.aggregatedList": "compute.instanceGroups.list",
    "instances.aggregatedList": "compute.instances.list",
    "instanceTemplates.aggregatedList": "compute.instanceTemplates.list",
    "zoneOperations.wait": "compute.zoneOperations.get",
    "globalOperations.wait": "compute.globalOperations.get",
    "globalOperations.aggregatedList": "compute.globalOperations.list",
    "autoscalers.aggregatedList": "compute.autoscalers.list",
}
MAKES_VMS = {
    "instanceGroupManagers.insert",
    "instanceGroupManagers.resize",
    "instanceGroupManagers.createInstances",
    "instanceGroupManagers.recreateInstances",
}


def permission(method: str) -> str:
    """The permission a served method (``instances.get``) needs: ``compute.instances.get``."""
    return SPECIAL.get(method) or f"compute.{method}"


def needs(method: str, template_account: str | None) -> list[tuple[str, Resource]]:
    """Every (permission, resource) the call needs: its own, and acting as the VMs' account."""
    needed = [(permission(method), Resource("project"))]
    if method in MAKES_VMS and template_account:
        needed.append(("iam.serviceAccounts.actAs", Resource("serviceAccount", template_account)))
    return needed


def denied(permission_name: str, path: str, message: str) -> ApiError:
    """Compute Engine's 403: ``Required 'PERMISSION' permission for 'RESOURCE'``, with who was refused."""
    return ApiError(403, "forbidden", f"Required '{permission_name}' permission for '{path}' ({message})")


def authorize(
    gate: Gate, cloud: State, method: str, *, groups: dict[str, str], body: Any, path: str, authorization: str | None
) -> None:
    """Raise Compute Engine's 403 unless the caller's credential holds every permission ``method``
    needs (localcloud/identity.py: the roles infra/terraform/iam.tf grants its account)."""
    if not gate.enforced:
        return
    for needed, resource in needs(method, vm_account(cloud, method, groups, body)):
        decision = gate.check(authorization, needed, resource, method)
        if not decision.allowed:
            raise denied(needed, path.removeprefix("/compute/v1/"), decision.denial(groups.get("project", "")))


def vm_account(cloud: State, method: str, groups: dict[str, str], body: Any) -> str | None:
    """The member the VMs of this call run as (its template's service account), if it makes VMs."""
    if method not in MAKES_VMS:
        return None
    project = groups.get("project", "")
    with cloud.lock:
        if method == "instanceGroupManagers.insert":
            template_ref = str((body or {}).get("instanceTemplate", ""))
        else:
            mig = cloud.migs.get((project, groups.get("zone", ""), groups.get("mig", "")))
            template_ref = mig.template_url if mig else ""
        template = cloud.templates.get((project, template_ref.rstrip("/").rsplit("/", 1)[-1]))
    accounts = (template or {}).get("properties", {}).get("serviceAccounts") or [{}]
    found = re.match(r"^sinergym-(?P<member>[a-z]+)@", str(accounts[0].get("email", "")))
    return found["member"] if found else None
