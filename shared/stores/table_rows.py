"""The rows of the Table store (``shared/stores/table.py`` describes the layout): their keys,
the commit partitions, an entry's stored form (its document as text, compressed, or spread over
part rows) and its views, and how rows are grouped into entity group transactions."""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from shared.errors import StoreRejected
from shared.events.entry import AuditEntry, iso_utc
from shared.keys import KeyRing

_Entity = dict[str, Any]

#: The one commit partition of a table made before commit partitions (no layout row).
TRAIL = "t"
#: The row that records a table's count of commit partitions, fixed when the table is made.
LAYOUT_KEY = ("meta", "layout")
#: Commit partitions of a new table (AUDIT_TABLE_PARTITIONS).
DEFAULT_PARTITIONS = 16
MAX_PARTITIONS = 64
#: A string property holds at most 64 KiB (UTF-16).
TEXT_BYTES = 65_536
#: A binary property holds at most 64 KiB.
BINARY_CHUNK = 65_536
#: Compressed document bytes one row may carry (the entity limit is 1 MiB, keys included).
ROW_DOCUMENT_BYTES = 14 * BINARY_CHUNK
#: Decompressed documents are bounded (a tampered row must not exhaust memory).
MAX_DOCUMENT_BYTES = 64 * 1024 * 1024
MAX_TRANSACTION_OPERATIONS = 100
MAX_TRANSACTION_BYTES = 3_000_000


def trail_partitions(count: int) -> tuple[str, ...]:
    """The commit partitions of a table made with ``count``: ``t|00`` to ``t|<count - 1>``
    (a table made before commit partitions has one, ``t``)."""
    if not 1 <= count <= MAX_PARTITIONS:
        raise ValueError(f"commit partitions: 1 to {MAX_PARTITIONS}, not {count}")
    return tuple(f"t|{k:02d}" for k in range(count))


def commit_partition(entry_id: str, partitions: Sequence[str]) -> str:
    """The partition of an entry's commit point and views: a hash of its id (SHA-256, so a
    sender choosing ids cannot crowd one partition more than chance does)."""
    if len(partitions) == 1:
        return partitions[0]
    digest = hashlib.sha256(entry_id.encode()).digest()
    return partitions[int.from_bytes(digest[:4], "big") % len(partitions)]


def is_trail_partition(partition: str) -> bool:
    return partition == TRAIL or partition.startswith("t|")


def entry_key(entry_id: str, partition: str = TRAIL) -> tuple[str, str]:
    """PartitionKey and RowKey of an entry's commit-point row."""
    return partition, f"e|{entry_id}"


class _Keyed(Protocol):
    """What ``view_keys`` reads of an entry (an AuditEntry, or an entry row's summary)."""

    @property
    def entry_id(self) -> str: ...
    @property
    def regarding_id(self) -> str | None: ...
    @property
    def processsession_id(self) -> str: ...
    @property
    def operation_created_on(self) -> datetime: ...


def _time_key(entry: _Keyed) -> str:
    return f"{iso_utc(entry.operation_created_on)}|{entry.entry_id}"


def view_keys(entry: _Keyed, partition: str = TRAIL) -> list[tuple[str, str]]:
    """PartitionKey and RowKey of an entry's three views, regarding, session and day, all in
    its commit partition; in a table made before commit partitions (``t``) the day view has
    a partition of its own, its day's."""
    regarding = entry.regarding_id or "none"
    if partition == TRAIL:
        day = (f"d|{entry.operation_created_on.astimezone(UTC):%Y-%m-%d}", _time_key(entry))
    else:
        day = (partition, f"d|{_time_key(entry)}")
    return [
        (partition, f"r|{regarding}|{_time_key(entry)}"),
        (partition, f"s|{entry.processsession_id}|{_time_key(entry)}"),
        day,
    ]


@dataclass(frozen=True, slots=True)
class Stored:
    """An entry as the table holds it: its document (JSON) and the rows that carry it."""

    entry: AuditEntry
    document: str
    digest: str
    #: the commit-point row (and its part rows), created together in one transaction
    rows: list[_Entity]
    #: what each view row carries: the document, or a pointer to the entry row
    view_properties: _Entity
    #: the commit partition of the entry row and its regarding and session views
    partition: str = TRAIL


def _chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


def stored_form(
    entry: AuditEntry,
    document: str | None = None,
    *,
    ring: KeyRing | None = None,
    seal: str | None = None,
    partition: str = TRAIL,
) -> Stored:
    """The rows of one entry (see the module docstring) in its commit ``partition``: a new
    entry's document sealed under ``ring``; a held one keeps the ``document`` and ``seal`` it
    was stored with."""
    if document is None:
        document = entry.json_text()
        seal = ring.seal_document(document) if ring is not None else None
    digest = hashlib.sha256(document.encode()).hexdigest()
    summary: _Entity = {
        "entry_id": entry.entry_id,
        "verdict": entry.verdict.value,
        "reason": entry.reason.value if entry.reason else "",
        "message_name": entry.message_name,
        "processsession_id": entry.processsession_id,
        "regarding_id": entry.regarding_id or "",
        "operation_created_on": entry.operation_created_on,
        "recorded_at": entry.recorded_at,
        "digest": digest,
        "seal": seal or "",
        "doc_chars": len(document),
    }
    pk, rk = entry_key(entry.entry_id, partition)
    if len(document) * 4 <= TEXT_BYTES or len(document.encode("utf-16-le")) <= TEXT_BYTES:
        carried: _Entity = {"doc": document}
        row = {"PartitionKey": pk, "RowKey": rk, **summary, **carried}
        return Stored(entry, document, digest, [row], {**summary, **carried}, partition)
    packed = zlib.compress(document.encode(), 6)
    if len(packed) <= ROW_DOCUMENT_BYTES:
        chunks = _chunks(packed, BINARY_CHUNK)
        carried = {"docz": len(chunks), **{f"docz_{i}": c for i, c in enumerate(chunks)}}
        row = {"PartitionKey": pk, "RowKey": rk, **summary, **carried}
        return Stored(entry, document, digest, [row], {**summary, **carried}, partition)
    parts = _chunks(packed, ROW_DOCUMENT_BYTES)
    rows = [{"PartitionKey": pk, "RowKey": rk, **summary, "doc_parts": len(parts)}]
    for n, part in enumerate(parts):
        chunks = _chunks(part, BINARY_CHUNK)
        rows.append(
            {
                "PartitionKey": pk,
                "RowKey": f"x|{entry.entry_id}|{n:04d}",
                "entry_id": entry.entry_id,
                "docz": len(chunks),
                **{f"docz_{i}": c for i, c in enumerate(chunks)},
            }
        )
    if sum(len(p) for p in parts) * 4 // 3 > MAX_TRANSACTION_BYTES:
        raise StoreRejected(
            entry.entry_id,
            f"entry compresses to {len(packed):,} bytes, over what one Table Storage "
            "transaction carries (4 MiB)",
        )
    return Stored(entry, document, digest, rows, {**summary, "doc_ref": True}, partition)


def view_rows(stored: Stored) -> list[_Entity]:
    """The three view rows of a stored entry (same properties, three keys)."""
    return [
        {"PartitionKey": pk, "RowKey": rk, **stored.view_properties}
        for pk, rk in view_keys(stored.entry, stored.partition)
    ]


def packed_document(entity: Any) -> bytes:
    return b"".join(bytes(entity[f"docz_{i}"]) for i in range(int(entity["docz"])))


def inflate(packed: bytes) -> str:
    inflater = zlib.decompressobj()
    data = inflater.decompress(packed, MAX_DOCUMENT_BYTES)
    if inflater.unconsumed_tail:
        raise ValueError(f"document over {MAX_DOCUMENT_BYTES:,} bytes")
    return data.decode()


def transaction_batches(units: Iterable[list[_Entity]]) -> Iterator[list[_Entity]]:
    """Units (rows that must be written together, one partition each) grouped by partition,
    then cut to the transaction limits; a unit is never split."""
    by_partition: dict[str, list[list[_Entity]]] = {}
    for unit in units:
        by_partition.setdefault(unit[0]["PartitionKey"], []).append(unit)
    for group in by_partition.values():
        batch: list[_Entity] = []
        size = 0
        for unit in group:
            weight = sum(_weight(entity) for entity in unit)
            if batch and (
                len(batch) + len(unit) > MAX_TRANSACTION_OPERATIONS
                or size + weight > MAX_TRANSACTION_BYTES
            ):
                yield batch
                batch, size = [], 0
            batch.extend(unit)
            size += weight
        if batch:
            yield batch


def _weight(entity: _Entity) -> int:
    """An upper bound of a row's bytes on the wire (JSON, binary as base64)."""
    total = 1_000
    for value in entity.values():
        if isinstance(value, bytes):
            total += len(value) * 4 // 3 + 4
        else:
            total += len(str(value)) * 6  # a character may be escaped as \\uXXXX
    return total


@dataclass(frozen=True, slots=True)
class KeyProbe:
    """What ``view_keys`` reads of an entry, from an entry row's summary columns."""

    entry_id: str
    regarding_id: str | None
    processsession_id: str
    operation_created_on: datetime


def parse_view_key(partition: str, row_key: str) -> tuple[str, dict[str, str | None]] | None:
    """The entry id a view row's key names, and what the key says of that entry (its
    regarding or session, its time); None for a key this store does not make."""
    parts = row_key.split("|")
    if is_trail_partition(partition) and len(parts) == 3 and parts[0] == "d":
        return parts[2], {"operation_created_on": parts[1]}
    if is_trail_partition(partition) and len(parts) == 4 and parts[0] in ("r", "s"):
        column = "regarding_id" if parts[0] == "r" else "processsession_id"
        value = None if parts[0] == "r" and parts[1] == "none" else parts[1]
        return parts[3], {column: value, "operation_created_on": parts[2]}
    if partition.startswith("d|") and len(parts) == 2:
        return parts[1], {"operation_created_on": parts[0]}
    return None


def entry_of_view_key(partition: str, row_key: str) -> str | None:
    """The entry id a view row's key names (None for a key this store does not make)."""
    named = parse_view_key(partition, row_key)
    return named[0] if named is not None else None


def document_size(row: Any) -> int:
    """How many characters of JSON a row carries or points at (compressed or not)."""
    size = row.get("doc_chars")
    return int(size) if isinstance(size, int) else len(str(row.get("doc", "")))


def recorded_partitions(row: Any) -> int:
    """The count a layout row records (a row that says something else is a ValueError)."""
    count = row.get("partitions")
    if not isinstance(count, int) or isinstance(count, bool):
        raise ValueError(f"the table's layout row says partitions={count!r}")
    trail_partitions(count)
    return count


def stamp(value: Any) -> str | None:
    return iso_utc(value) if isinstance(value, datetime) else None


def commit_rows_only(rows: list[_Entity]) -> list[_Entity]:
    """The entry row and its part rows of a commit unit (without its views)."""
    return [row for row in rows if row["RowKey"][:2] in ("e|", "x|")]
