"""Window seals in Azure Blob Storage, apart from the Table store's entries.

One blob per window record, ``seals/<end>.json`` (fixed-width UTC, so names sort in window
order), created only if absent (``If-None-Match: *``): of several instances sealing at once
one stores the record, the others find it there. In Azure the container has a time-based
retention (WORM) policy (infra/resources.bicep), so not even the account's owner can change
or delete a record before it expires; the app's identity needs *Storage Blob Data
Contributor* on that container only. The SDK is imported only when this store is used.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from typing import Any

from azure.core.exceptions import AzureError, ResourceExistsError
from azure.storage.blob import BlobServiceClient, ContainerClient

from shared.errors import StoreUnavailable
from shared.stores.seals import SealRecord, parse_records

PREFIX = "seals/"
#: Every request: connect within 5 s, an answer within 20 s, no SDK retries (callers retry).
CLIENT_OPTIONS: dict[str, Any] = {"connection_timeout": 5, "read_timeout": 20, "retry_total": 0}


class BlobSealStore:
    """SealStore on one blob container."""

    def __init__(
        self,
        container: str,
        *,
        connection_string: str | None = None,
        endpoint: str | None = None,
    ) -> None:
        if connection_string:
            service = BlobServiceClient.from_connection_string(connection_string, **CLIENT_OPTIONS)
        elif endpoint:
            from azure.identity import DefaultAzureCredential

            service = BlobServiceClient(endpoint, DefaultAzureCredential(), **CLIENT_OPTIONS)
        else:
            raise ValueError(
                "window seals of the table store go to Blob Storage: set AUDIT_SEAL_ENDPOINT "
                "(https://<account>.blob.core.windows.net, managed identity) or "
                "AUDIT_SEAL_CONNECTION_STRING"
            )
        self.where = f"blob container {container!r}"
        self._container: ContainerClient = service.get_container_client(container)

    def _unavailable(self, action: str, exc: AzureError) -> StoreUnavailable:
        status = getattr(exc, "status_code", None)
        detail = f"HTTP {status}" if status else type(exc).__name__
        if status == 403:  # a missing or not yet applied role: retried, and named
            detail += (
                " (the identity lacks Storage Blob Data Contributor on the seal container, or "
                "Storage Blob Data Reader to verify; a new role assignment takes a few minutes)"
            )
        return StoreUnavailable(f"seal store ({self.where}): {action} failed: {detail}")

    def records(self) -> list[SealRecord]:
        """Every window record, in window order."""
        try:
            if not self._container.exists():
                return []
            names = sorted(b.name for b in self._container.list_blobs(name_starts_with=PREFIX))
            return parse_records(
                (name, self._container.download_blob(name).readall().decode("utf-8", "replace"))
                for name in names
            )
        except AzureError as exc:
            raise self._unavailable("read", exc) from exc

    def add(self, record: SealRecord) -> bool:
        """Create the record's blob unless it exists; True when this call created it."""
        try:
            if not self._container.exists():
                with suppress(ResourceExistsError):  # another instance created it
                    self._container.create_container()
            self._container.upload_blob(
                f"{PREFIX}{record.end}.json", record.to_json().encode(), overwrite=False
            )
            return True
        except ResourceExistsError:
            return False
        except AzureError as exc:
            raise self._unavailable("write", exc) from exc

    def policy(
        self,
        container_id: str | None,
        want_days: int,
        arm_get: Callable[[str], dict[str, Any]] | None = None,
    ) -> tuple[dict[str, Any], list[str]]:
        """What ``verify`` reports of the container's immutability (WORM) policy: the data
        plane says whether there is one; Azure Resource Manager (with ``container_id``) whether
        it is locked and for how long. A warning for each thing short of the documented."""
        try:
            has_policy = bool(self._container.get_container_properties().has_immutability_policy)
        except AzureError as exc:
            return {"state": "unchecked"}, [f"the seal container's policy was not read: {exc}"]
        answer: dict[str, Any] | None = None
        failure = None
        if container_id and has_policy:
            try:
                answer = (arm_get or _arm_get)(
                    f"{ARM}{container_id}/immutabilityPolicies/default?api-version={ARM_API}"
                )
            except Exception as exc:  # noqa: BLE001 - any failure is a warning, not a crash
                failure = (
                    f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
                )
        return policy_findings(has_policy, answer, want_days, container_id, failure)


#: Azure Resource Manager, and the documented answer of Get Immutability Policy
#: (https://learn.microsoft.com/rest/api/storagerp/blob-containers/get-immutability-policy):
#: ``{"properties": {"immutabilityPeriodSinceCreationInDays": N, "state": "Locked" |
#: "Unlocked", ...}, "etag": ...}``
ARM = "https://management.azure.com"
ARM_API = "2023-05-01"


def policy_findings(
    has_policy: bool,
    answer: dict[str, Any] | None,
    want_days: int,
    container_id: str | None,
    failure: str | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """The policy as verify reports it (``state``: none, Locked, Unlocked, unchecked; and
    ``days``) and the warnings it earns."""
    if not has_policy:
        return {"state": "none"}, [
            "the seal container has no immutability (WORM) policy: its window records can be "
            "changed or deleted by whoever may write to it (docs/operations.md section 8)"
        ]
    if answer is None:
        why = failure or "AUDIT_SEAL_CONTAINER_ID is not set"
        return {"state": "unchecked"}, [
            f"the seal container's policy lock was not checked ({why}); an unlocked policy "
            "protects nothing against the account's owner"
        ]
    properties = answer.get("properties") if isinstance(answer, dict) else None
    properties = properties if isinstance(properties, dict) else {}
    state = str(properties.get("state") or "unknown")
    days = properties.get("immutabilityPeriodSinceCreationInDays")
    days = days if isinstance(days, int) else None
    warnings = []
    if state != "Locked":
        warnings.append(
            f"the seal container's immutability policy is {state}, not Locked: the account's "
            "owner can still shorten or delete it; lock it (docs/operations.md section 8)"
        )
    if days is None or days < want_days:
        warnings.append(
            f"the seal container's retention is {days} days, shorter than the documented "
            f"{want_days} (AUDIT_SEAL_RETENTION_DAYS)"
        )
    return {"state": state, "days": days, "container_id": container_id}, warnings


def _arm_get(url: str) -> dict[str, Any]:
    """One GET on Azure Resource Manager as DefaultAzureCredential (10 s, no retries)."""
    import requests
    from azure.identity import DefaultAzureCredential

    token = DefaultAzureCredential().get_token("https://management.azure.com/.default").token
    response = requests.get(
        url, headers={"Authorization": f"Bearer {token}"}, timeout=(5, 10), allow_redirects=False
    )
    if response.status_code != 200:
        raise ValueError(f"Azure Resource Manager answered HTTP {response.status_code}")
    answer = response.json() if len(response.content) < 1_000_000 else None
    if not isinstance(answer, dict):
        raise ValueError("Azure Resource Manager's answer is not a JSON object")
    return answer
