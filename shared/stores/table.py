"""Azure Table Storage audit store (``AUDIT_STORE=table``): the audit trail in Azure.

Table design (one table, ``AUDIT_TABLE_NAME``). Each entry is written as three full copies,
one per read it must serve with a single-partition (or partition-range) query:

    view        PartitionKey                  RowKey
    regarding   regarding|<regarding id|none>  <operation_created_on>|<entry_id>
    session     session|<processsession id>    <operation_created_on>|<entry_id>
    time        day|<YYYY-MM-DD>               <operation_created_on>|<entry_id>

``operation_created_on`` is fixed-width UTC ISO-8601, so RowKeys sort by time, then entry id.
The entry itself is JSON in ``entry_0..entry_<n-1>`` (``entry_chunks`` = n), each at most
15,000 characters so that even all-astral text stays under the 64 KiB string limit; nothing is
cut. An entry too large for the 1 MiB entity limit is refused (``StoreRejected``), never cut.

Writes create, never replace: an entity that exists already is left as it is, so rewriting an
``entry_id`` changes nothing. Entities of one partition go in entity transactions of at most
100 operations (and well under the 4 MiB payload limit). A transaction that meets an existing
entity is redone entity by entity, skipping those that exist. If a write fails between
partitions, some views hold the entry and others not yet; the message is not completed, and
its redelivery writes the rest.

Connect with a connection string (Azurite, development) or, in Azure, with the account's
table endpoint and ``DefaultAzureCredential`` (managed identity; the identity needs *Storage
Table Data Contributor*). The SDK is imported only when this store is selected.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from datetime import UTC, datetime
from functools import partial
from itertools import groupby
from typing import Any

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
)
from azure.data.tables import TableClient, TableServiceClient

from shared.audit import AuditEntry, iso_utc
from shared.errors import ConflictingDuplicates, StoreRejected, StoreUnavailable
from shared.settings import connection_string_value
from shared.stores.base import (
    Page,
    Unreadable,
    conflicting,
    decode_continuation,
    encode_continuation,
    normalize_id,
    read_rows,
)

CHUNK_CHARS = 15_000
MAX_ENTRY_UTF16_BYTES = 900_000
MAX_TRANSACTION_OPERATIONS = 100
MAX_TRANSACTION_BYTES = 3_000_000
#: Partition transactions in flight at once for one batch.
WRITE_CONCURRENCY = 8
# 404: the table is gone (deleted, or a fresh emulator); it is recreated and the write retried.
_TRANSIENT_STATUS = {404, 408, 429}


#: Azure Table Storage's DateTime range starts here; an earlier value is stored by Azurite but
#: then breaks every read of its partitions.
EARLIEST = datetime(1601, 1, 1, tzinfo=UTC)


def _unavailable(action: str, exc: Exception, endpoint: str = "") -> StoreUnavailable:
    """A transient store error that says what failed, where, and what to check; never a
    secret (the endpoint is the account URL, which holds no key)."""
    status = getattr(exc, "status_code", None)
    if isinstance(exc, ClientAuthenticationError):
        hint = " (check the credential and the Storage Table Data Contributor role)"
    elif status is None:
        hint = " (no answer: check that the endpoint is right and reachable from here)"
    else:
        hint = ""
    detail = f"HTTP {status}" if status else type(exc).__name__
    where = f" at {endpoint}" if endpoint else ""
    return StoreUnavailable(f"Table Storage {action} failed{where}: {detail}{hint}")


def _account_url(connection_string: str | None, endpoint: str | None) -> str:
    """The table endpoint, for messages: from AUDIT_TABLE_ENDPOINT or the connection string's
    TableEndpoint (never its key)."""
    return endpoint or connection_string_value(connection_string, "TableEndpoint") or ""


def _is_permanent(exc: AzureError) -> bool:
    status = getattr(exc, "status_code", None)
    return (
        isinstance(exc, HttpResponseError)
        and not isinstance(exc, ClientAuthenticationError)
        and status is not None
        and 400 <= status < 500
        and status not in _TRANSIENT_STATUS
    )


def row_key(entry: AuditEntry) -> str:
    """``<operation_created_on>|<entry_id>``: time order, then a stable tie-break."""
    return f"{iso_utc(entry.operation_created_on)}|{entry.entry_id}"


def partition_keys(entry: AuditEntry) -> list[str]:
    """The three views' partitions of one entry (time view last: it is the count's source)."""
    return [
        f"regarding|{entry.regarding_id or 'none'}",
        f"session|{entry.processsession_id}",
        f"day|{entry.operation_created_on.astimezone(UTC):%Y-%m-%d}",
    ]


def to_entities(entry: AuditEntry) -> list[dict[str, Any]]:
    """The three entities of one entry (same properties, three keys)."""
    document = entry.json_text()
    chunks = [document[i : i + CHUNK_CHARS] for i in range(0, len(document), CHUNK_CHARS)]
    size = sum(len(chunk.encode("utf-16-le")) for chunk in chunks)
    if size > MAX_ENTRY_UTF16_BYTES:
        raise StoreRejected(
            entry.entry_id,
            f"entry is {size:,} bytes as UTF-16, over Table Storage's 1 MiB entity limit",
        )
    properties: dict[str, Any] = {
        "entry_id": entry.entry_id,
        "verdict": entry.verdict.value,
        "reason": entry.reason.value if entry.reason else "",
        "message_name": entry.message_name,
        "processsession_id": entry.processsession_id,
        "regarding_id": entry.regarding_id or "",
        "operation_created_on": entry.operation_created_on,
        "entry_chunks": len(chunks),
        **{f"entry_{i}": chunk for i, chunk in enumerate(chunks)},
    }
    key = row_key(entry)
    return [{"PartitionKey": pk, "RowKey": key, **properties} for pk in partition_keys(entry)]


def _document(entity: Any) -> str:
    return "".join(entity[f"entry_{i}"] for i in range(int(entity["entry_chunks"])))


def _read(entities: Iterable[Any]) -> tuple[list[AuditEntry], list[Unreadable]]:
    return read_rows(
        (str(e.get("entry_id") or e.get("RowKey")), partial(_document, e)) for e in entities
    )


def _transactions(entities: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Entities grouped by partition, then cut to the transaction limits."""
    entities = sorted(entities, key=lambda e: (e["PartitionKey"], e["RowKey"]))
    for _, group in groupby(entities, key=lambda e: e["PartitionKey"]):
        batch: list[dict[str, Any]] = []
        size = 0
        for entity in group:
            weight = sum(len(str(v)) * 2 for v in entity.values()) + 1_000
            if batch and (
                len(batch) == MAX_TRANSACTION_OPERATIONS or size + weight > MAX_TRANSACTION_BYTES
            ):
                yield batch
                batch, size = [], 0
            batch.append(entity)
            size += weight
        if batch:
            yield batch


class TableAuditStore:
    """AuditStore on one Azure Table (see the module docstring for the design)."""

    def __init__(
        self,
        table_name: str,
        *,
        connection_string: str | None = None,
        endpoint: str | None = None,
        create: bool = True,
        **client_options: Any,
    ) -> None:
        try:
            if connection_string:
                service = TableServiceClient.from_connection_string(
                    connection_string, **client_options
                )
            elif endpoint:
                from azure.identity import DefaultAzureCredential

                service = TableServiceClient(
                    endpoint, credential=DefaultAzureCredential(), **client_options
                )
            else:
                raise ValueError(
                    "the table store needs AUDIT_TABLE_ENDPOINT (managed identity) or "
                    "AUDIT_TABLE_CONNECTION_STRING"
                )
            self._service = service
            self.endpoint = _account_url(connection_string, endpoint)
            self.table_name = table_name
            self._pool = ThreadPoolExecutor(WRITE_CONCURRENCY, thread_name_prefix="table-write")
            self._table: TableClient = (
                service.create_table_if_not_exists(table_name)
                if create
                else service.get_table_client(table_name)
            )
        except AzureError as exc:
            raise _unavailable(
                f"opening table {table_name!r}", exc, _account_url(connection_string, endpoint)
            ) from exc

    def write(self, entries: Sequence[AuditEntry]) -> int:
        """Create every view of every entry; existing ones are left untouched.

        An entry whose entry_id is already stored with other event content is not written
        (the first version is kept) and is reported by ``ConflictingDuplicates`` after the rest
        is stored. Partitions are independent, so their transactions go out concurrently (HTTP
        round trips dominate); the write fails if any of them failed.
        """
        for entry in entries:
            if entry.operation_created_on < EARLIEST:
                raise StoreRejected(
                    entry.entry_id,
                    f"operation_created_on {iso_utc(entry.operation_created_on)} is before "
                    "1601-01-01, the earliest date Azure Table Storage holds (refused at write "
                    "time, so that no read of its partitions ever fails)",
                )
        conflicts = conflicting(entries, self._held_versions(entries))
        keep = [
            e
            for e in entries
            if e.entry_id not in conflicts
            or e.event_content() == conflicts[e.entry_id].event_content()
        ]
        created = self._create(keep)
        if conflicts:
            raise ConflictingDuplicates(conflicts)
        return created

    def _held_versions(self, entries: Sequence[AuditEntry]) -> list[AuditEntry]:
        """Entries already stored under the batch's entry ids. One entry_id belongs to one
        processsession, so each session's partition is read once (a session holds a handful of
        entries); partitions are read concurrently."""
        wanted = {e.entry_id for e in entries}
        sessions = sorted({e.processsession_id for e in entries})

        def read(session: str) -> list[Any]:
            try:
                return list(
                    self._table.query_entities(
                        "PartitionKey eq @pk", parameters={"pk": f"session|{session}"}
                    )
                )
            except AzureError as exc:
                if getattr(exc, "status_code", None) == 404:
                    return []  # the table is gone: nothing is held; the write recreates it
                raise _unavailable("read before write", exc, self.endpoint) from exc

        rows = [row for rows in self._pool.map(read, sessions) for row in rows]
        held, _ = _read(row for row in rows if row.get("entry_id") in wanted)
        return held

    def _create(self, entries: Sequence[AuditEntry]) -> int:
        entities = [entity for entry in entries for entity in to_entities(entry)]
        batches = list(_transactions(entities))
        if len(batches) <= 1:
            return sum(self._write_partition_batch(batch) for batch in batches)
        futures = [self._pool.submit(self._write_partition_batch, batch) for batch in batches]
        wait(futures)
        for future in futures:
            error = future.exception()
            if error is not None:
                raise error
        return sum(future.result() for future in futures)

    def _write_partition_batch(self, batch: list[dict[str, Any]], attempt: int = 1) -> int:
        try:
            self._table.submit_transaction([("create", e) for e in batch])
            return sum(e["PartitionKey"].startswith("day|") for e in batch)
        except AzureError as exc:
            if getattr(exc, "status_code", None) == 404 and attempt == 1:
                self._recreate_table(exc)
                return self._write_partition_batch(batch, attempt + 1)
            if getattr(exc, "status_code", None) == 409 or _is_permanent(exc):
                return self._write_one_by_one(batch)
            raise _unavailable("transaction", exc, self.endpoint) from exc

    def _recreate_table(self, cause: AzureError) -> None:
        """The table vanished under us: create it again (what was stored before is gone, but
        nothing this write holds is lost, since its messages are not settled yet)."""
        try:
            self._service.create_table_if_not_exists(self.table_name)
        except AzureError as exc:
            raise _unavailable(f"recreating table {self.table_name!r}", exc) from cause

    def _write_one_by_one(self, batch: list[dict[str, Any]]) -> int:
        created = 0
        for entity in batch:
            try:
                self._table.create_entity(entity)
                created += entity["PartitionKey"].startswith("day|")
            except ResourceExistsError:
                continue  # written by an earlier delivery: idempotent
            except AzureError as exc:
                if _is_permanent(exc):
                    message = getattr(exc, "message", None) or str(exc).splitlines()[0]
                    raise StoreRejected(entity["entry_id"], message[:300]) from exc
                raise _unavailable("write", exc, self.endpoint) from exc
        return created

    def _query(
        self,
        query_filter: str,
        parameters: dict[str, Any],
        limit: int | None,
        continuation: str | None,
    ) -> Page:
        try:
            if limit is None and continuation is None:
                rows: Iterable[Any] = self._table.query_entities(
                    query_filter, parameters=parameters
                )
                entries, unreadable = _read(rows)
                return Page(entries, None, unreadable)
            token = decode_continuation(continuation) if continuation else None
            if token is not None and not isinstance(token, dict):
                raise ValueError("invalid continuation token")
            pages = self._table.query_entities(
                query_filter, parameters=parameters, results_per_page=limit
            ).by_page(continuation_token=token)  # type: ignore[arg-type]  # SDK takes its dict
            page: Iterable[Any] = next(pages, [])
            entries, unreadable = _read(page)
            next_token = pages.continuation_token  # type: ignore[attr-defined]
            following = encode_continuation(next_token) if next_token else None
            return Page(entries, following, unreadable)
        except AzureError as exc:
            raise _unavailable("read", exc, self.endpoint) from exc

    def by_regarding(
        self, regarding_id: str, *, limit: int | None = None, continuation: str | None = None
    ) -> Page:
        """The trail of one regarding record: one partition, in RowKey (time) order."""
        pk = f"regarding|{normalize_id(regarding_id)}"
        return self._query("PartitionKey eq @pk", {"pk": pk}, limit, continuation)

    def by_session(
        self, processsession_id: str, *, limit: int | None = None, continuation: str | None = None
    ) -> Page:
        """All entries of one session: one partition, in time order."""
        pk = f"session|{normalize_id(processsession_id)}"
        return self._query("PartitionKey eq @pk", {"pk": pk}, limit, continuation)

    def in_range(
        self,
        start: datetime | None = None,
        end: datetime | None = None,
        *,
        limit: int | None = None,
        continuation: str | None = None,
    ) -> Page:
        """Day partitions from ``start`` to ``end``, filtered on RowKey (time) bounds."""
        clauses = ["PartitionKey ge @first", "PartitionKey lt @after"]
        parameters: dict[str, Any] = {"first": "day|", "after": "day}"}
        if start is not None:
            parameters["first"] = f"day|{start.astimezone(UTC):%Y-%m-%d}"
            clauses.append("RowKey ge @start")
            parameters["start"] = iso_utc(start)
        if end is not None:
            parameters["after"] = f"day|{end.astimezone(UTC):%Y-%m-%d}~"
            clauses.append("RowKey lt @end")
            parameters["end"] = iso_utc(end)
        return self._query(" and ".join(clauses), parameters, limit, continuation)

    def count(self) -> int:
        """Entries in the time view (one entity per entry)."""
        try:
            rows = self._table.query_entities(
                "PartitionKey ge 'day|' and PartitionKey lt 'day}'", select=["RowKey"]
            )
            return sum(1 for _ in rows)
        except AzureError as exc:
            raise _unavailable("count", exc, self.endpoint) from exc

    def delete_table(self) -> None:
        """Drop the whole table (tests and teardown only)."""
        self._service.delete_table(self.table_name)

    def close(self) -> None:
        """Close the HTTP clients."""
        self._pool.shutdown(wait=True)
        self._table.close()
        self._service.close()
