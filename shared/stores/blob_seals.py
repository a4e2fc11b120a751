"""Window seals in Azure Blob Storage, apart from the Table store's entries.

One blob per window record, ``seals/<end>.json`` (fixed-width UTC, so names sort in window
order), created only if absent (``If-None-Match: *``): of several instances sealing at once
one stores the record, the others find it there. In Azure the container has a time-based
retention (WORM) policy (infra/resources.bicep), so not even the account's owner can change
or delete a record before it expires; the app's identity needs *Storage Blob Data
Contributor* on that container only. The SDK is imported only when this store is used.
"""

from __future__ import annotations

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

    def close(self) -> None:
        self._container.close()
