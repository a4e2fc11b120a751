"""Azure Table Storage audit store (``AUDIT_STORE=table``): the audit trail in Azure.

Several Functions instances write to one table at once, so every guarantee below holds under
writers racing each other, without a lock.

Rows (one table, ``AUDIT_TABLE_NAME``; ``<time>`` is ``operation_created_on`` as fixed-width
UTC ISO-8601, so RowKeys sort by time, then entry id; ``<k>`` is the entry's commit partition,
a hash of its id, 00 to N-1):

    row          PartitionKey    RowKey                                          role
    layout       meta            layout                                          N, once
    entry        t|<k>           e|<entry_id>                                    commit point
    entry part   t|<k>           x|<entry_id>|<n>                                a huge entry
    regarding    t|<k>           r|<regarding_id or none>|<time>|<entry_id>      view
    session      t|<k>           s|<processsession_id>|<time>|<entry_id>         view
    day          t|<k>           d|<time>|<entry_id>                             view

A table made before commit partitions (no layout row, rows in ``t``) is read and written as
it was made: one commit partition ``t``, and day views in partitions of their own
(``d|<YYYY-MM-DD>``, RowKey ``<time>|<entry_id>``) written after the commit;
``psaudit migrate-table`` copies it into a new table (``copy_in``).

**One commit point per entry.** The ``entry`` row is created insert-only (never replaced):
the first writer of an ``entry_id`` wins, atomically, in Table Storage itself. A writer that
finds the row already there (HTTP 409) reads it and compares event content: the same event is
a redelivery (nothing new), other content is a ``ConflictingDuplicates`` (the newcomer is
dead-lettered as ``conflicting_duplicate``; the first version stays).

**Views from the winner only.** An entry's views live in the entry row's partition and are
created in the same entity group transaction as the entry row, so they exist exactly when it
does. When that transaction meets a row that exists (a redelivery, a race, a crash's
leftovers), each entry is committed alone and its views are then written (upserted) from the
document the entry row holds, never from the losing message. ``check_views`` (``psaudit
check-store``) proves that every view agrees with the entry rows, and repairs them on request.

**No single-partition ceiling.** Azure's target for a partition is 2,000 entities per second;
an entry is four rows of its commit partition, so N partitions (``AUDIT_TABLE_PARTITIONS``,
16, fixed when the table is made) carry some 500 x N entries a second. Readers fan out: a
key's or a time range's rows are one RowKey range in each partition, read at once and merged
by RowKey.

**Few, lean transactions.** A batch is one entity group transaction per partition it touches
(at most 100 rows each); nothing is read before writing. Its body is written and its answer
read by ``table_batch`` (``AUDIT_TABLE_TRANSACTIONS=lean``), through the table client's own
pipeline: a fifth of the SDK's ``submit_transaction`` CPU (``sdk``, the fallback). The count of
requests is what decides the cost now (``python -m bench.table_batch``).

**Every entry fits.** A document of up to 64 KiB as UTF-16 is kept as text (``doc``); a
larger one is compressed (``docz_0..``, 64 KiB binary chunks); one that still exceeds an
entity spreads over ``entry part`` rows written in the entry row's own transaction (so it is
as atomic), and its views point at the entry row (``doc_ref``) instead of holding a copy.
Every row carries ``digest`` (SHA-256 of the document), which ``check_views`` compares.

Connect with a connection string (Azurite, development) or, in Azure, with the account's
table endpoint and ``DefaultAzureCredential`` (managed identity; the identity needs *Storage
Table Data Contributor*). Every request has a connection and a read timeout and the SDK's own
retries are off: the pipeline retries in place within its time budget (``StoreRetry``).
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.data.tables import TableClient, TableServiceClient, UpdateMode

from shared.errors import StoreRejected, StoreUnavailable
from shared.events.entry import AuditEntry, iso_utc
from shared.keys import KeyRing
from shared.settings import connection_string_value
from shared.stores.base import (
    DEFAULT_PAGE_CHARS,
    VIEW,
    ConflictingDuplicates,
    Page,
    RawRow,
    Unreadable,
    ViewProblem,
    conflicting,
    decode_continuation,
    encode_continuation,
    normalize_id,
    read_rows,
)
from shared.stores.seals import StoredRow
from shared.stores.table_batch import LeanTransactions, Operation
from shared.stores.table_rows import (
    DEFAULT_PARTITIONS,
    LAYOUT_KEY,
    TRAIL,
    KeyProbe,
    Stored,
    commit_partition,
    commit_rows_only,
    document_size,
    entry_key,
    entry_of_view_key,
    inflate,
    packed_document,
    parse_view_key,
    recorded_partitions,
    stamp,
    stored_form,
    trail_partitions,
    transaction_batches,
    view_keys,
    view_rows,
)

#: Requests in flight at once for one batch (one round trip for the 16 commit partitions).
WRITE_CONCURRENCY = 16
#: Queries in flight at once for one read fanned out over the commit partitions.
READ_CONCURRENCY = 16
#: Seconds to open a connection; the read timeout is AUDIT_TABLE_READ_TIMEOUT.
CONNECTION_TIMEOUT = 5.0
# 404: the table is gone (deleted, or a fresh emulator); it is recreated and the write retried.
# 403: the identity's role is missing, or not yet there (a role assignment takes minutes to
# reach the data plane after a deployment): waited out like an outage, never a rejection.
_TRANSIENT_STATUS = {403, 404, 408, 429}
#: What a 403 from Table or Blob Storage means, in the log line
ROLE_HINT = (
    " (the identity lacks a data role: {role}; a new role assignment takes a few minutes to "
    "apply, so this is retried)"
)

#: Azure Table Storage's DateTime range starts here; an earlier value is stored by Azurite but
#: then breaks every read of its partitions.
EARLIEST = datetime(1601, 1, 1, tzinfo=UTC)

_Entity = dict[str, Any]
_R = TypeVar("_R")


def _unavailable(action: str, exc: Exception, endpoint: str = "") -> StoreUnavailable:
    """A transient store error that says what failed, where, and what to check; never a
    secret (the endpoint is the account URL, which holds no key)."""
    status = getattr(exc, "status_code", None)
    if status == 403:
        hint = ROLE_HINT.format(role="Storage Table Data Contributor on the account")
    elif isinstance(exc, ClientAuthenticationError):
        hint = " (check the credential and the Storage Table Data Contributor role)"
    elif status is None:
        hint = " (no answer in time: check that the endpoint is right and reachable from here)"
    else:
        hint = ""
    detail = f"HTTP {status}" if status else type(exc).__name__
    where = f" at {endpoint}" if endpoint else ""
    return StoreUnavailable(f"Table Storage {action} failed{where}: {detail}{hint}")


def _account_url(connection_string: str | None, endpoint: str | None) -> str:
    """The table endpoint, for messages: from AUDIT_TABLE_ENDPOINT or the connection string's
    TableEndpoint (never its key)."""
    return endpoint or connection_string_value(connection_string, "TableEndpoint") or ""


def _environment_once(url: str) -> dict[str, Any]:
    """The environment's proxy and CA bundle for ``url``, read once. requests reads them (and
    ~/.netrc) again for every request, walking the whole environment twice, about a quarter
    of a lean transaction's CPU (``bench.table_batch``); every request of this store goes to
    this one endpoint, so what it would find is the same each time. Without an endpoint (a
    connection string naming only the account) requests keeps reading them itself."""
    if not url:
        return {}
    import os

    from requests.utils import get_environ_proxies

    options: dict[str, Any] = {"use_env_settings": False}
    proxies = get_environ_proxies(url)
    if proxies:
        options["proxies"] = proxies
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        options["connection_verify"] = bundle
    return options


def _status(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) else None


def _is_permanent(exc: AzureError) -> bool:
    status = _status(exc)
    return (
        isinstance(exc, HttpResponseError)
        and not isinstance(exc, ClientAuthenticationError)
        and status is not None
        and 400 <= status < 500
        and status not in _TRANSIENT_STATUS
        and status != 409
    )


class TableAuditStore:
    """AuditStore on one Azure Table (see the module docstring for the design)."""

    def __init__(
        self,
        table_name: str,
        *,
        connection_string: str | None = None,
        endpoint: str | None = None,
        create: bool = True,
        read_timeout: float = 20.0,
        ring: KeyRing | None = None,
        page_chars: int = DEFAULT_PAGE_CHARS,
        transactions: str = "lean",
        partitions: int = DEFAULT_PARTITIONS,
        **client_options: Any,
    ) -> None:
        if transactions not in ("lean", "sdk"):
            raise ValueError(f"AUDIT_TABLE_TRANSACTIONS is lean or sdk, not {transactions!r}")
        self.ring = ring
        self.page_chars = page_chars
        self.endpoint = _account_url(connection_string, endpoint)
        options: dict[str, Any] = {
            "connection_timeout": CONNECTION_TIMEOUT,
            "read_timeout": read_timeout,
            "retry_total": 0,  # the pipeline retries, within its time budget
            **_environment_once(self.endpoint),
            **client_options,
        }
        try:
            if connection_string:
                service = TableServiceClient.from_connection_string(connection_string, **options)
            elif endpoint:
                from azure.identity import DefaultAzureCredential

                service = TableServiceClient(
                    endpoint, credential=DefaultAzureCredential(), **options
                )
            else:
                raise ValueError(
                    "the table store needs AUDIT_TABLE_ENDPOINT (managed identity) or "
                    "AUDIT_TABLE_CONNECTION_STRING"
                )
            self._service = service
            self.table_name = table_name
            self._pool = ThreadPoolExecutor(WRITE_CONCURRENCY, thread_name_prefix="table-write")
            self._table: TableClient = (
                service.create_table_if_not_exists(table_name)
                if create
                else service.get_table_client(table_name)
            )
            self._lean = LeanTransactions(self._table) if transactions == "lean" else None
            self._readers = ThreadPoolExecutor(READ_CONCURRENCY, thread_name_prefix="table-read")
            #: commit partitions: recorded in the table when it was made (``_layout``)
            self.partitions, self._legacy = self._layout(partitions, create)
            self._trail = (TRAIL,) if self._legacy else trail_partitions(self.partitions)
        except AzureError as exc:
            raise _unavailable(f"opening table {table_name!r}", exc, self.endpoint) from exc

    def _layout(self, wanted: int, create: bool) -> tuple[int, bool]:
        """The table's commit partitions, and whether it was made before them: its layout
        row; a table with rows in ``t`` and no layout row was made before (one partition,
        ``t``, day views in partitions of their own); a new table gets ``wanted``, recorded
        insert-only, so writers racing to make it agree on the first one written."""
        if wanted == 0:  # the layout before commit partitions, asked for (tests of that layout)
            return 1, True
        trail_partitions(wanted)  # in range
        for _ in range(2):
            try:
                return recorded_partitions(self._table.get_entity(*LAYOUT_KEY)), False
            except ResourceNotFoundError:
                pass
            try:
                query = f"PartitionKey eq '{TRAIL}'"
                older = next(iter(self._table.query_entities(query, select=["RowKey"])), None)
            except ResourceNotFoundError:
                return 1, True  # no table (a reader): nothing to read in any layout
            if older is not None or not create:
                return 1, True
            try:
                self._table.create_entity(
                    {"PartitionKey": LAYOUT_KEY[0], "RowKey": LAYOUT_KEY[1], "partitions": wanted}
                )
                return wanted, False
            except ResourceExistsError:
                continue  # another writer made it first: read theirs
        raise StoreUnavailable(f"table {self.table_name!r}: its layout row cannot be read")

    def partition_of(self, entry_id: str) -> str:
        """The commit partition of an entry (its entry row, parts, regarding and session views)."""
        return commit_partition(entry_id, self._trail)

    def _each_partition(
        self, query_filter: str, parameters: dict[str, Any], select: list[str] | None = None
    ) -> list[Any]:
        """``query_filter`` (with ``@pk``) over every commit partition, concurrently; the rows
        of all of them, partition by partition."""

        def one(partition: str) -> list[Any]:
            return list(
                self._table.query_entities(
                    query_filter, parameters={**parameters, "pk": partition}, select=select
                )
            )

        if len(self._trail) == 1:
            return one(self._trail[0])
        return [row for rows in self._readers.map(one, self._trail) for row in rows]

    # -- writing ---------------------------------------------------------------------------

    def write(self, entries: Sequence[AuditEntry]) -> int:
        """Commit each entry (insert-only entry row), then write the views of what won.

        An entry whose entry_id is already stored with other event content is not written
        (the first version is kept) and is reported by ``ConflictingDuplicates`` after the rest
        is stored. Returns how many entry rows this call created.
        """
        for entry in entries:
            if entry.operation_created_on < EARLIEST:
                raise StoreRejected(
                    entry.entry_id,
                    f"operation_created_on {iso_utc(entry.operation_created_on)} is before "
                    "1601-01-01, the earliest date Azure Table Storage holds (refused at write "
                    "time, so that no read of its partitions ever fails)",
                )
        candidates: dict[str, Stored] = {}
        for entry in entries:  # the first of a batch's copies of one entry_id is its candidate
            if entry.entry_id not in candidates:
                candidates[entry.entry_id] = stored_form(
                    entry, ring=self.ring, partition=self.partition_of(entry.entry_id)
                )
        return self._write_stored(candidates, entries)

    def _write_stored(self, candidates: dict[str, Stored], entries: Sequence[AuditEntry]) -> int:
        """Commit each candidate and write the views of what won (``write``)."""
        inline = 2 if self._legacy else 3  # views in the commit (an older table: not the day's)
        units = [[*s.rows, *view_rows(s)[:inline]] for s in candidates.values()]
        results = self._run_all(
            [partial(self._commit, batch) for batch in transaction_batches(units)]
        )
        created = sum(n for n, _, _ in results)
        apart = [entry_id for _, ids, _ in results for entry_id in ids]  # committed alone
        existing = [entry_id for _, _, ids in results for entry_id in ids]
        found = self._run_all([partial(self._held, entry_id) for entry_id in existing])
        held = dict(zip(existing, found, strict=True))
        winners = [held.get(entry_id, stored) for entry_id, stored in candidates.items()]
        rows = [row for s in winners for row in view_rows(s)[inline:]]  # older tables' days
        for entry_id in (*apart, *existing):  # the views the commit did not write
            rows += view_rows(held.get(entry_id) or candidates[entry_id])[:inline]
        batches = transaction_batches([row] for row in rows)
        self._run_all([partial(self._write_views, batch) for batch in batches])
        conflicts = conflicting(entries, (s.entry for s in held.values()))
        if conflicts:
            raise ConflictingDuplicates(conflicts)
        return created

    def copy_in(self, rows: Iterable[StoredRow], chunk: int = 100) -> tuple[int, list[str]]:
        """Copy entries as another trail holds them (``migrate-table``): each keeps its
        document and seal, byte for byte, in this table's layout. Returns how many entry rows
        this call created, and the ids of rows not copied: unreadable, or holding another
        entry's document (``verify`` names each)."""
        created, unreadable = 0, []
        batch: dict[str, Stored] = {}
        for row in rows:
            try:
                entry = AuditEntry.model_validate_json(row.document)
            except ValueError:
                entry = None
            if entry is None or entry.entry_id != row.row_id:  # unreadable, or a copy
                unreadable.append(row.row_id)
                continue
            batch[entry.entry_id] = stored_form(
                entry, row.document, seal=row.seal, partition=self.partition_of(entry.entry_id)
            )
            if len(batch) >= chunk:
                created += self._write_stored(batch, [s.entry for s in batch.values()])
                batch = {}
        if batch:
            created += self._write_stored(batch, [s.entry for s in batch.values()])
        return created, unreadable

    def _commit(self, batch: list[_Entity]) -> tuple[int, list[str], list[str]]:
        """Create entry rows with their regarding and session views in one transaction.

        Returns how many entries it created, and, when the transaction met a row that exists
        (or one the service refuses), the entries committed one by one instead: those created
        (their views still to write) and those found there already.
        """
        entries = [e for e in batch if e["RowKey"].startswith("e|")]
        try:
            self._send(batch, "create")
            return len(entries), [], []
        except (ResourceExistsError, StoreRejected) as exc:
            if isinstance(exc, StoreRejected) and len(entries) == 1:
                raise  # that one entry is refused for good
        created, existing = [], []
        for entry in entries:  # each entry alone: its commit-point rows, without the views
            rows = [e for e in batch if e["entry_id"] == entry["entry_id"]]
            try:
                self._send(commit_rows_only(rows), "create")
                created.append(entry["entry_id"])
            except ResourceExistsError:
                existing.append(entry["entry_id"])
        return len(created), created, existing

    def _run_all(self, calls: list[Callable[[], _R]]) -> list[_R]:
        """Run calls concurrently (one alone on this thread); raise the first failure."""
        if len(calls) <= 1:
            return [call() for call in calls]
        futures = [self._pool.submit(call) for call in calls]
        return [future.result() for future in futures]

    def _held(self, entry_id: str) -> Stored:
        found = self.stored(entry_id)
        if found is None:  # deleted between the 409 and the read: a tampered or dropped table
            raise StoreUnavailable(
                f"entry {entry_id} was there, then gone, while it was being written; retried"
            )
        return found

    def _write_views(self, batch: list[_Entity]) -> None:
        """Write view rows: created (the cheaper request), else replaced, since they are
        derived from the entry rows and may be there from an earlier delivery."""
        try:
            self._send(batch, "create")
        except ResourceExistsError:
            self._send(batch, "upsert")

    def _send(self, batch: list[_Entity], operation: Operation, attempt: int = 1) -> None:
        """One partition's rows in one request: a plain one for a single row, else an entity
        group transaction (all or nothing): lean (``table_batch``) or the SDK's. A row that
        exists raises ResourceExistsError for a create; a refusal raises StoreRejected;
        anything else StoreUnavailable."""
        try:
            if len(batch) == 1 and operation == "upsert":  # one row: the plain request
                self._table.upsert_entity(batch[0], mode=UpdateMode.REPLACE)
            elif len(batch) == 1:
                self._table.create_entity(batch[0])
            elif self._lean is not None:
                self._lean.submit([(operation, e) for e in batch])
            elif operation == "upsert":
                self._table.submit_transaction(
                    [("upsert", e, {"mode": UpdateMode.REPLACE}) for e in batch]
                )
            else:
                self._table.submit_transaction([("create", e) for e in batch])
        except AzureError as exc:
            if _status(exc) == 404 and attempt == 1:
                self._recreate_table(exc)
                return self._send(batch, operation, attempt + 1)
            if _status(exc) == 409:
                raise ResourceExistsError(_message(exc)) from exc
            if _is_permanent(exc):
                raise StoreRejected(batch[0]["entry_id"], _message(exc)) from exc
            raise _unavailable("write", exc, self.endpoint) from exc
        return None

    def _recreate_table(self, cause: AzureError) -> None:
        """The table vanished under us: create it again (what was stored before is gone, but
        nothing this write holds is lost, since its messages are not settled yet)."""
        try:
            self._service.create_table_if_not_exists(self.table_name)
        except AzureError as exc:
            raise _unavailable(f"recreating table {self.table_name!r}", exc) from cause

    # -- reading ---------------------------------------------------------------------------

    def stored(self, entry_id: str) -> Stored | None:
        """The entry held under ``entry_id`` as stored (None when there is none)."""
        pk, rk = entry_key(entry_id, self.partition_of(entry_id))
        try:
            row = self._table.get_entity(pk, rk)
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise _unavailable("read after a conflict", exc, self.endpoint) from exc
        document = self._document(row)
        entry = AuditEntry.model_validate_json(document)
        seal = str(row.get("seal") or "") or None
        return stored_form(entry, document, seal=seal, partition=pk)

    def _document(self, row: Any, follow: bool = True) -> str:
        """The JSON document a row carries or points at. Only a view row points (at its entry
        row, once): an entry row without a document, or a pointer to no entry row, is a
        ValueError (a tampered row), never a loop."""
        if "doc" in row:
            return str(row["doc"])
        if "docz" in row:
            return inflate(packed_document(row))
        entry_id = str(row.get("entry_id") or "")
        pk, _ = entry_key(entry_id, self.partition_of(entry_id))
        if "doc_parts" in row:  # the part rows sit beside their entry row
            pk = str(row.get("PartitionKey", pk))
            parts = self._table.query_entities(
                "PartitionKey eq @pk and RowKey gt @first and RowKey lt @after",
                parameters={"pk": pk, "first": f"x|{entry_id}|", "after": f"x|{entry_id}}}"},
            )
            chunks = sorted((p["RowKey"], packed_document(p)) for p in parts)
            if len(chunks) != int(row["doc_parts"]):
                raise ValueError(f"{len(chunks)} of {row['doc_parts']} entry parts found")
            return inflate(b"".join(chunk for _, chunk in chunks))
        if str(row.get("RowKey", "")).startswith("e|") or not follow:
            raise ValueError("the row carries no document")
        try:
            target = self._table.get_entity(pk, f"e|{entry_id}")
        except ResourceNotFoundError:
            raise ValueError(
                f"the view points at entry {entry_id}, which has no entry row"
            ) from None
        return self._document(target, follow=False)

    def _raw(self, row: Any) -> RawRow:
        """A row with what its keys claim of the entry; a view row can fall back to its
        entry's commit-point row (``read_rows``)."""
        partition, key = str(row.get("PartitionKey", "")), str(row.get("RowKey", ""))
        digest = row.get("digest")
        seal = str(row.get("seal") or "") or None
        document = partial(self._document, row)
        if key.startswith("e|"):
            claims: dict[str, str | None] = {
                "regarding_id": str(row.get("regarding_id") or "") or None,
                "processsession_id": str(row.get("processsession_id") or ""),
                "operation_created_on": stamp(row.get("operation_created_on")),
                "recorded_at": stamp(row.get("recorded_at")),
            }
            return RawRow(key[2:], document, seal, claims, str(digest or ""))
        named = parse_view_key(partition, key)
        if named is None:  # not a key this store makes: its entry row, if any, is the truth
            entry_id, claims = str(row.get("entry_id") or key), {"row_key": key}
        else:
            entry_id, claims = named
        return RawRow(
            entry_id,
            document,
            seal,
            claims,
            str(digest or ""),
            fallback=partial(self._commit_point, entry_id),
        )

    def _commit_point(self, entry_id: str) -> RawRow | None:
        """The entry's commit-point row, or None when there is none."""
        try:
            return self._raw(
                self._table.get_entity(*entry_key(entry_id, self.partition_of(entry_id)))
            )
        except ResourceNotFoundError:
            return None

    def _read(self, rows: Iterable[Any], continuation: str | None = None) -> Page:
        page = read_rows((self._raw(r) for r in rows), self.ring)
        return Page(page.entries, continuation, page.unreadable, page.tampered)

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
                return self._read(rows)
            token = decode_continuation(continuation) if continuation else None
            if token is not None and not isinstance(token, dict):
                raise ValueError("invalid continuation token")
            after = token.pop("after", None) if token else None
            if after is not None:  # our own position: after a page cut short by its size
                if not (isinstance(after, list) and len(after) == 2):
                    raise ValueError("invalid continuation token")
                query_filter = (  # the SDK finds @names between spaces only
                    f"( {query_filter} ) and ( PartitionKey gt @after_pk or "
                    "( PartitionKey eq @after_pk and RowKey gt @after_rk ) )"
                )
                parameters = {**parameters, "after_pk": str(after[0]), "after_rk": str(after[1])}
            pages = self._table.query_entities(
                query_filter, parameters=parameters, results_per_page=limit
            ).by_page(continuation_token=token or None)  # type: ignore[arg-type]  # its dict
            page: Iterable[Any] = next(pages, [])
            read = list(page)  # the SDK sets the next token once the page is read
            next_token = pages.continuation_token  # type: ignore[attr-defined]
            fits = _within_budget(read, self.page_chars)
            if fits < len(read):
                last = read[fits - 1]
                next_token = {"after": [last["PartitionKey"], last["RowKey"]]}
                read = read[:fits]
            following = encode_continuation(next_token) if next_token else None
            return self._read(read, following)
        except AzureError as exc:
            raise _unavailable("read", exc, self.endpoint) from exc

    def _keyed(
        self,
        kind: str,
        key: str,
        limit: int | None,
        continuation: str | None,
        checked: bool = True,
    ) -> Page:
        """One key's rows of a view in the commit partitions: a RowKey range in each, merged
        in time order; ``checked``: the last page adds the entries that have no row in the
        view."""
        prefix = f"{kind}|{key}|"
        view_filter = "PartitionKey eq @pk and RowKey gt @first and RowKey lt @after"
        bounds = {"first": prefix, "after": f"{kind}|{key}}}"}
        if len(self._trail) == 1:
            page = self._query(view_filter, {"pk": self._trail[0], **bounds}, limit, continuation)
        else:
            page = self._merged(view_filter, bounds, limit, continuation)
        if not checked or page.continuation is not None:
            return page
        column = "regarding_id" if kind == "r" else "processsession_id"
        value = "" if kind == "r" and key == "none" else key
        return self._with_unviewed(
            page,
            f"{column} eq @value",
            {"value": value},
            lambda: self._each_partition(view_filter, bounds, ["PartitionKey", "RowKey"]),
        )

    def _merged(
        self,
        view_filter: str,
        bounds: dict[str, str],
        limit: int | None,
        continuation: str | None,
    ) -> Page:
        """A RowKey range read in every commit partition at once and merged by RowKey (time,
        then entry id: one order across partitions). For a page, each partition's first
        answer is a share of ``limit`` (all asked at once); a partition the page needs more of
        is read further, page by page, only then. The next page starts after the last RowKey
        shown."""
        parameters = dict(bounds)
        if continuation:
            token = decode_continuation(continuation)
            after = token.get("after_rk") if isinstance(token, dict) else None
            if not isinstance(after, str) or not bounds["first"] < after < bounds["after"]:
                raise ValueError("invalid continuation token")
            parameters["first"] = after
        share = None if limit is None else min(limit + 1, max(8, 2 * -(-limit // len(self._trail))))

        def first(partition: str) -> tuple[list[Any], Iterator[Any]]:
            pages = self._table.query_entities(
                view_filter, parameters={**parameters, "pk": partition}, results_per_page=share
            ).by_page()
            if limit is None:
                return [row for page in pages for row in page], iter(())
            return list(next(pages, [])), (row for page in pages for row in page)

        def rows(opening: list[Any], rest: Iterator[Any]) -> Iterator[Any]:
            yield from opening
            yield from rest  # read only when the merge gets this far

        try:
            openings = list(self._readers.map(first, self._trail))
            merged = heapq.merge(*(rows(*o) for o in openings), key=lambda r: str(r["RowKey"]))
            taken = list(merged if limit is None else itertools.islice(merged, limit + 1))
        except AzureError as exc:
            raise _unavailable("read", exc, self.endpoint) from exc
        if limit is None:
            return self._read(taken)
        read = taken[:limit]
        fits = _within_budget(read, self.page_chars)
        more = len(taken) > limit or fits < len(read)
        read = read[:fits]
        following = (
            encode_continuation({"after_rk": str(read[-1]["RowKey"])}) if more and read else None
        )
        return self._read(read, following)

    def _with_unviewed(
        self,
        page: Page,
        entry_filter: str,
        entry_parameters: dict[str, Any],
        view_rows_of: Callable[[], Iterable[Any]],
    ) -> Page:
        """``page`` (the last of a read) plus the entries the read should have found but whose
        view row is missing (removed by hand): read from their entry rows, marked. Two
        projections (entry ids in every commit partition, view keys), then one read per
        missing entry."""
        try:
            committed = {
                str(row["RowKey"])[2:]
                for row in self._each_partition(
                    "PartitionKey eq @pk and RowKey gt 'e|' and RowKey lt 'e}'"
                    + (f" and {entry_filter}" if entry_filter else ""),
                    entry_parameters,
                    ["RowKey"],
                )
            }
            if not committed:
                return page
            viewed = {
                entry_of_view_key(str(row["PartitionKey"]), str(row["RowKey"]))
                for row in view_rows_of()
            }
            lost = sorted(committed - viewed)
            rows = [
                self._table.get_entity(*entry_key(entry_id, self.partition_of(entry_id)))
                for entry_id in lost
            ]
        except ResourceNotFoundError:
            return page  # removed meanwhile: nothing to add
        except AzureError as exc:
            raise _unavailable("read", exc, self.endpoint) from exc
        if not rows:
            return page
        found = read_rows((self._raw(row) for row in rows), self.ring)
        note = "the entry has no row in this view (removed): read from its entry row"
        marks = [Unreadable(e.entry_id, VIEW, note) for e in found.entries]
        return Page(
            [*page.entries, *found.entries],
            None,
            [*page.unreadable, *found.unreadable],
            [*page.tampered, *found.tampered, *marks],
        )

    def by_regarding(
        self,
        regarding_id: str,
        *,
        limit: int | None = None,
        continuation: str | None = None,
        checked: bool = True,
    ) -> Page:
        """The trail of one regarding record: one RowKey range, in time order."""
        return self._keyed("r", normalize_id(regarding_id), limit, continuation, checked)

    def by_session(
        self,
        processsession_id: str,
        *,
        limit: int | None = None,
        continuation: str | None = None,
        checked: bool = True,
    ) -> Page:
        """All entries of one session: one RowKey range, in time order."""
        return self._keyed("s", normalize_id(processsession_id), limit, continuation, checked)

    def in_range(
        self,
        start: datetime | None = None,
        end: datetime | None = None,
        *,
        limit: int | None = None,
        continuation: str | None = None,
    ) -> Page:
        """The entries from ``start`` to ``end`` in time order: the day view's RowKey range
        in every commit partition, merged (in a table made before commit partitions: the day
        partitions, filtered on RowKey); the last page adds the entries of the range whose day
        view row is missing."""
        entry_clauses: list[str] = []
        entry_parameters: dict[str, Any] = {}
        if start is not None:
            entry_clauses.append("operation_created_on ge @since")
            entry_parameters["since"] = start
        if end is not None:
            entry_clauses.append("operation_created_on lt @until")
            entry_parameters["until"] = end
        view_rows_of: Callable[[], Iterable[Any]]
        if not self._legacy:
            view_filter = "PartitionKey eq @pk and RowKey gt @first and RowKey lt @after"
            bounds = {
                "first": f"d|{iso_utc(start)}" if start is not None else "d|",
                "after": f"d|{iso_utc(end)}" if end is not None else "d}",
            }
            page = self._merged(view_filter, bounds, limit, continuation)
            keys = ["PartitionKey", "RowKey"]
            view_rows_of = partial(self._each_partition, view_filter, bounds, keys)
        else:
            clauses = ["PartitionKey ge @first", "PartitionKey lt @after"]
            parameters: dict[str, Any] = {"first": "d|", "after": "d}"}
            if start is not None:
                parameters["first"] = f"d|{start.astimezone(UTC):%Y-%m-%d}"
                clauses.append("RowKey ge @start")
                parameters["start"] = iso_utc(start)
            if end is not None:
                parameters["after"] = f"d|{end.astimezone(UTC):%Y-%m-%d}~"
                clauses.append("RowKey lt @end")
                parameters["end"] = iso_utc(end)
            query = " and ".join(clauses)
            page = self._query(query, parameters, limit, continuation)
            view_rows_of = partial(
                self._table.query_entities,
                query,
                parameters=parameters,
                select=["PartitionKey", "RowKey"],
            )
        if page.continuation is not None:
            return page
        return self._with_unviewed(
            page, " and ".join(entry_clauses), entry_parameters, view_rows_of
        )

    def _entry_rows(self, select: list[str] | None = None) -> Iterator[Any]:
        """Every entry row, commit partition after commit partition (streamed)."""
        for partition in self._trail:
            yield from self._table.query_entities(
                "PartitionKey eq @pk and RowKey gt 'e|' and RowKey lt 'e}'",
                parameters={"pk": partition},
                select=select,
            )

    def scan(
        self, start: datetime | None = None, end: datetime | None = None
    ) -> Iterator[StoredRow]:
        """Every entry row with ``start <= recorded_at < end`` (filtered by the service), for
        sealing and verifying; streamed page by page."""
        query = "PartitionKey eq @pk and RowKey gt 'e|' and RowKey lt 'e}'"
        parameters: dict[str, Any] = {}
        if start is not None:
            query += " and recorded_at ge @start"
            parameters["start"] = start
        if end is not None:
            query += " and recorded_at lt @end"
            parameters["end"] = end
        rows = (
            row
            for partition in self._trail
            for row in self._table.query_entities(query, parameters={**parameters, "pk": partition})
        )
        try:
            for row in rows:
                try:
                    document = self._document(row)
                except (ValueError, KeyError, TypeError):
                    document = ""  # verify reports it as unreadable, with its id
                yield StoredRow(
                    str(row.get("RowKey", ""))[2:],
                    document,
                    str(row.get("seal") or "") or None,
                    {
                        "regarding_id": str(row.get("regarding_id") or "") or None,
                        "processsession_id": str(row.get("processsession_id") or ""),
                        "operation_created_on": stamp(row.get("operation_created_on")),
                        "recorded_at": stamp(row.get("recorded_at")),
                    },
                )
        except AzureError as exc:
            raise _unavailable("scan", exc, self.endpoint) from exc

    def by_id(self, entry_id: str) -> Page:
        """The one entry whose commit-point row is ``entry_id``."""
        try:
            wanted = normalize_id(entry_id)
            row = self._table.get_entity(*entry_key(wanted, self.partition_of(wanted)))
        except ResourceNotFoundError:
            return Page()
        except AzureError as exc:
            raise _unavailable("read", exc, self.endpoint) from exc
        return self._read([row])

    def count(self) -> int:
        """Entries committed (entry rows)."""
        try:
            return sum(1 for _ in self._entry_rows(["RowKey"]))
        except AzureError as exc:
            raise _unavailable("count", exc, self.endpoint) from exc

    # -- checking the views ----------------------------------------------------------------

    def check_views(self, repair: bool = False) -> list[ViewProblem]:
        """Every view row against the entry rows: a view missing, carrying another document
        (digest), or with no entry behind it is a problem. ``repair`` rewrites the views of
        each entry from its entry row and deletes views that no entry has."""
        try:
            return self._check_views(repair)
        except AzureError as exc:
            raise _unavailable("view check", exc, self.endpoint) from exc

    def _check_views(self, repair: bool) -> list[ViewProblem]:
        fields = ["PartitionKey", "RowKey", "entry_id", "digest", "operation_created_on"]
        fields += ["regarding_id", "processsession_id"]
        expected: dict[tuple[str, str], tuple[str, str]] = {}  # view key -> (entry_id, digest)
        for row in self._entry_rows(fields):
            when = row.get("operation_created_on")
            try:
                probe = KeyProbe(
                    str(row["RowKey"])[2:],
                    str(row.get("regarding_id") or "") or None,
                    str(row.get("processsession_id") or ""),
                    when if isinstance(when, datetime) else datetime.fromisoformat(str(when)),
                )
            except (KeyError, TypeError, ValueError):
                continue  # an entry row that cannot say its keys: verify reports it
            for key in view_keys(probe, str(row["PartitionKey"])):
                expected[key] = (probe.entry_id, str(row.get("digest")))
        problems: list[ViewProblem] = []
        ranges = "(RowKey gt 'r|' and RowKey lt 'r}') or (RowKey gt 's|' and RowKey lt 's}')"
        if not self._legacy:
            ranges += " or (RowKey gt 'd|' and RowKey lt 'd}')"
        views = [f"PartitionKey eq '{partition}' and ({ranges})" for partition in self._trail]
        if self._legacy:
            views.append("PartitionKey ge 'd|' and PartitionKey lt 'd}'")
        seen: set[tuple[str, str]] = set()
        for query in views:
            for row in self._table.query_entities(query):  # whole rows: their documents too
                key = (str(row["PartitionKey"]), str(row["RowKey"]))
                seen.add(key)
                want = expected.get(key)
                if want is None:
                    problems.append(ViewProblem("orphan", str(row.get("entry_id")), *key))
                elif str(row.get("digest")) != want[1] or not self._carries(row, want):
                    problems.append(ViewProblem("differs", want[0], *key))
        problems += [
            ViewProblem("missing", entry_id, *key)
            for key, (entry_id, _) in expected.items()
            if key not in seen
        ]
        if repair and problems:
            problems = self._repair(problems)
        return problems

    def _carries(self, row: Any, want: tuple[str, str]) -> bool:
        """Whether a view row carries the document its entry row does: its own entry id, and
        a document whose SHA-256 is the entry's digest (a genuine document of another entry,
        copied in with the digest left as it was, is caught here). A view that points at its
        entry row (a huge entry) carries nothing to compare."""
        if str(row.get("entry_id")) != want[0]:
            return False
        if row.get("doc_ref") and "doc" not in row and "docz" not in row:
            return True
        try:
            document = self._document(row, follow=False)
        except (ValueError, KeyError, TypeError):
            return False
        return hashlib.sha256(document.encode()).hexdigest() == want[1]

    def _repair(self, problems: list[ViewProblem]) -> list[ViewProblem]:
        """Rewrite each disagreeing or missing view from its entry row; delete an orphan only
        if, read again just before, its entry is still absent and the row has not changed
        (ETag-conditional): a writer committing meanwhile keeps its views. Returns what it
        found, less the orphans that turned out to have their entry."""
        from azure.core import MatchConditions

        found: list[ViewProblem] = []
        rebuild = sorted({p.entry_id for p in problems if p.kind != "orphan"})
        for problem in problems:
            if problem.kind != "orphan":
                found.append(problem)
                continue
            key_entry = entry_of_view_key(problem.partition_key, problem.row_key)
            try:
                held = self.stored(key_entry) if key_entry else None
            except ValueError:  # its entry row is unreadable (verify names it)
                held = None
            key = (problem.partition_key, problem.row_key)
            if held is not None and key in view_keys(held.entry, held.partition):
                rebuild.append(held.entry.entry_id)  # committed since the check read entries
                continue
            found.append(problem)
            try:
                row = self._table.get_entity(problem.partition_key, problem.row_key)
                self._table.delete_entity(
                    problem.partition_key,
                    problem.row_key,
                    etag=row.metadata["etag"],
                    match_condition=MatchConditions.IfNotModified,
                )
            except ResourceNotFoundError:
                pass  # gone already
            except HttpResponseError as exc:
                if _status(exc) != 412:  # 412: rewritten meanwhile, by a writer: kept
                    raise
        for entry_id in sorted(set(rebuild)):
            held = self.stored(entry_id)
            if held is not None:
                for batch in transaction_batches([row] for row in view_rows(held)):
                    self._send(batch, "upsert")
        return found

    def delete_table(self) -> None:
        """Drop the whole table (tests and teardown only)."""
        self._service.delete_table(self.table_name)

    def close(self) -> None:
        """Close the HTTP clients."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._readers.shutdown(wait=False, cancel_futures=True)
        self._table.close()
        self._service.close()


def _within_budget(rows: list[Any], chars: int) -> int:
    """How many of ``rows`` a page takes: its character budget, as in SQLite (the first row
    always, then rows while their documents together stay within ``chars``)."""
    size = 0
    for index, row in enumerate(rows):
        size += document_size(row)
        if index and size > chars:
            return index
    return len(rows)


def _message(exc: AzureError) -> str:
    message = getattr(exc, "message", None) or str(exc).splitlines()[0]
    return str(message).splitlines()[0][:300]
