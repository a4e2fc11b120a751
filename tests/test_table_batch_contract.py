"""The lean entity group transaction (``shared.stores.table_batch``) against the SDK's own
``TableClient.submit_transaction``, side by side on Azurite: the same operations give the same
rows (values and types) and the same errors (type, status, error code), and the Table store
gives the same rows and the same store errors on either path (``AUDIT_TABLE_TRANSACTIONS``).

Faults Azurite cannot play (a 5xx, a failed part inside a 202, no answer in time) come from a
loopback proxy in front of it (``devtools/table_relay.py``); a 403 is Azurite's own answer to a
wrong account key.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any

import pytest
from azure.data.tables import TableClient, TableServiceClient, UpdateMode

from devtools.table_relay import TableRelay
from shared.errors import StoreRejected, StoreUnavailable
from shared.stores.base import ConflictingDuplicates
from shared.stores.table import TableAuditStore
from shared.stores.table_batch import LeanTransactions, Operation, batch_answers, entity_json
from shared.stores.table_rows import stored_form, view_rows
from tests.entries import make_entry

Ops = Sequence[tuple[Operation, Mapping[str, Any]]]
BANK = "5f1b0c55-0000-4000-8000-0000000000b1"


def sdk(table: TableClient, ops: Ops) -> None:
    table.submit_transaction(
        [(op, e, {"mode": UpdateMode.REPLACE}) if op == "upsert" else (op, e) for op, e in ops]
    )


def lean(table: TableClient, ops: Ops) -> None:
    LeanTransactions(table).submit(ops)


PATHS: dict[str, Callable[[TableClient, Ops], None]] = {"sdk": sdk, "lean": lean}


def outcome(call: Callable[[], None]) -> tuple[Any, ...]:
    """What a call did: ok, or its error's type, HTTP status and error code."""
    try:
        call()
    except Exception as exc:  # the comparison is the point
        code = getattr(exc, "error_code", None)
        code = getattr(code, "value", code)  # the SDK gives an enum member or its text
        return (type(exc).__name__, getattr(exc, "status_code", None), str(code or ""))
    return ("ok",)


def both(table: TableClient | Mapping[str, TableClient], ops: Ops) -> dict[str, tuple[Any, ...]]:
    """Each path's outcome for ``ops``, on one table or on each path's own."""
    results = {}
    for path, call in PATHS.items():
        target = table if isinstance(table, TableClient) else table[path]
        results[path] = outcome(partial(call, target, ops))
    return results


def rows(table: TableClient) -> list[dict[str, tuple[str, Any]]]:
    """Every row as read back through the SDK, with each value's type, without the service's
    own Timestamp and ETag."""
    found = [
        {key: (type(value).__name__, value) for key, value in entity.items()}
        for entity in table.list_entities()
    ]
    return sorted(found, key=lambda r: (r["PartitionKey"][1], r["RowKey"][1]))


@pytest.fixture
def tables(azurite: Any) -> Iterator[dict[str, TableClient]]:
    service = TableServiceClient.from_connection_string(azurite.connection_string, retry_total=0)
    made = {path: service.create_table(f"c{path}{uuid.uuid4().hex[:12]}") for path in PATHS}
    yield made
    for table in made.values():
        service.delete_table(table.table_name)
    service.close()


def odd_entity(rk: str, **extra: Any) -> dict[str, Any]:
    """Every property type the store writes, at its edges."""
    return {
        "PartitionKey": "t",
        "RowKey": rk,
        "text": 'é\u2028\U0001f600 "quoted" \\ back </ slash',
        "empty": "",
        "flag": False,
        "yes": True,
        "low": -(2**31),
        "high": 2**31 - 1,
        "ratio": 1.5,
        "earliest": datetime(1601, 1, 1, tzinfo=UTC),
        "latest": datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        "micro": datetime(2026, 12, 7, 1, 2, 3, 450000, tzinfo=UTC),
        "blob": bytes(range(256)),
        "nothing": b"",
        "skipped": None,
        **extra,
    }


def entry_batches() -> list[list[dict[str, Any]]]:
    """The store's own commit units: a small entry, a compressed one, one over an entity
    (part rows), each with its regarding and session views."""
    rng = random.Random(3)
    noise = "".join(chr(rng.randrange(0x10000, 0x10FFFF)) for _ in range(400_000))
    entries = [
        make_entry(1, regarding=BANK),
        make_entry(2, regarding=BANK, processsession_name="x" * 70_000),
        make_entry(3, regarding=BANK, processsession_name=noise),
    ]
    return [[*s.rows, *view_rows(s)[:2]] for s in map(stored_form, entries)]


def test_the_same_operations_write_the_same_rows(tables: dict[str, TableClient]) -> None:
    batches: list[list[tuple[Operation, dict[str, Any]]]] = [
        [("create", odd_entity("a|o'brien")), ("create", odd_entity("a|%2F%27+&=x"))],
        [("create", e) for e in entry_batches()[0]],
        [("create", e) for e in entry_batches()[1]],
        [("create", e) for e in entry_batches()[2]],
        [
            ("upsert", {**odd_entity("a|o'brien", text="replaced", flag=True), "ratio": None}),
            ("upsert", {"PartitionKey": "t", "RowKey": "a|new'one", "n": 7}),
        ],
    ]
    for ops in batches:
        results = both(tables, ops)
        assert results["lean"] == results["sdk"] == ("ok",)
    written = rows(tables["lean"])
    assert written == rows(tables["sdk"])
    replaced = next(r for r in written if r["RowKey"][1] == "a|o'brien")
    assert replaced["text"] == ("str", "replaced")
    assert "ratio" not in replaced  # replaced, not merged
    assert any(r["RowKey"][1].startswith("x|") for r in written)  # the huge entry's parts


FAULTS: list[tuple[str, Callable[[], Ops]]] = [
    (
        "conflict",
        lambda: [("create", odd_entity("b|new")), ("create", odd_entity("b|there"))],
    ),
    (
        "duplicate in one transaction",
        lambda: [("create", odd_entity("b|twice")), ("create", odd_entity("b|twice"))],
    ),
    (
        "a key the service refuses",
        lambda: [("create", odd_entity("b|a/b")), ("create", odd_entity("b|fine"))],
    ),
    (
        "a property over 64 KiB",
        lambda: [
            ("create", odd_entity("b|long", text="x" * 40_000)),
            ("create", odd_entity("b|y")),
        ],
    ),
    (
        "a request over 4 MiB",
        lambda: [
            ("create", odd_entity(f"b|big{i}", **{f"p{j}": bytes(60_000) for j in range(15)}))
            for i in range(6)
        ],
    ),
    (
        "two partitions",
        lambda: [
            ("create", odd_entity("b|p1")),
            ("create", {**odd_entity("b|p2"), "PartitionKey": "u"}),
        ],
    ),
]


@pytest.mark.parametrize(("name", "ops"), FAULTS, ids=[name for name, _ in FAULTS])
def test_the_same_refusals_raise_the_same_errors(
    tables: dict[str, TableClient], name: str, ops: Callable[[], Ops]
) -> None:
    for table in tables.values():
        table.create_entity(odd_entity("b|there"))
    results = both(tables, ops())
    assert results["lean"] == results["sdk"]
    assert results["lean"][0] != "ok", results
    assert rows(tables["lean"]) == rows(tables["sdk"])  # all or nothing, on both paths
    assert [r["RowKey"][1] for r in rows(tables["lean"])] == ["b|there"]


def test_a_missing_table_and_a_wrong_key_raise_the_same_errors(azurite: Any) -> None:
    service = TableServiceClient.from_connection_string(azurite.connection_string, retry_total=0)
    missing = service.get_table_client(f"gone{uuid.uuid4().hex[:12]}")
    ops: Ops = [("create", odd_entity("c|1")), ("create", odd_entity("c|2"))]
    results = both(missing, ops)
    assert results["lean"] == results["sdk"] == ("TableTransactionError", 404, "TableNotFound")
    wrong = azurite.connection_string.replace("AccountKey=Eby8", "AccountKey=Xby8")
    table = service.create_table(f"key{uuid.uuid4().hex[:12]}")
    forged = TableServiceClient.from_connection_string(wrong, retry_total=0)
    try:
        intruder = forged.get_table_client(table.table_name)
        results = both(intruder, ops)
        assert results["lean"] == results["sdk"]
        assert results["lean"][1] == 403
        assert list(table.list_entities()) == []
    finally:
        service.delete_table(table.table_name)
        forged.close()
        service.close()


@pytest.fixture
def proxy(azurite: Any) -> Iterator[TableRelay]:
    endpoint = azurite.connection_string.split("TableEndpoint=")[1].rstrip(";")
    server = TableRelay(endpoint)
    yield server
    server.close()


def _through(proxy: TableRelay, azurite: Any) -> str:
    head = azurite.connection_string.split("TableEndpoint=")[0]
    return f"{head}TableEndpoint={proxy.endpoint};"


@pytest.mark.parametrize("fault", ["503", "500", "part500", "stall"])
def test_faults_of_the_service_raise_the_same_errors(
    azurite: Any, proxy: TableRelay, fault: str
) -> None:
    service = TableServiceClient.from_connection_string(
        _through(proxy, azurite), retry_total=0, read_timeout=1
    )
    table = service.create_table(f"f{uuid.uuid4().hex[:12]}")
    proxy.fault, proxy.stall_seconds = fault, 3.0
    try:
        ops: Ops = [("create", odd_entity("d|1")), ("create", odd_entity("d|2"))]
        results = both(table, ops)
        assert results["lean"] == results["sdk"]
        expected = {
            "503": ("HttpResponseError", 503, "ServerBusy"),
            "500": ("HttpResponseError", 500, "InternalError"),
            "part500": ("TableTransactionError", 500, "InternalError"),
            "stall": ("ServiceResponseTimeoutError", None, ""),
        }
        assert results["lean"] == expected[fault]
    finally:
        proxy.fault = None
        service.delete_table(table.table_name)
        service.close()


def _store(connection_string: str, name: str, transactions: str) -> TableAuditStore:
    return TableAuditStore(
        name, connection_string=connection_string, transactions=transactions, read_timeout=1
    )


def test_the_store_writes_the_same_rows_and_raises_the_same_errors_on_either_path(
    azurite: Any, proxy: TableRelay
) -> None:
    """The store's own behaviour (commit point, conflict per entry, huge entries, views from
    the winner, store errors) is the same whichever path sends its transactions."""
    suffix = uuid.uuid4().hex[:12]
    connection = _through(proxy, azurite)
    stores = {path: _store(connection, f"s{path}{suffix}", path) for path in PATHS}
    rng = random.Random(5)
    noise = "".join(chr(rng.randrange(0x10000, 0x10FFFF)) for _ in range(400_000))
    first = [make_entry(n, regarding=BANK if n % 2 else None) for n in range(40)]
    first.append(make_entry(40, regarding=BANK, processsession_name=noise))
    changed = make_entry(3, regarding=BANK, processsession_name="another event, same id")
    later = [make_entry(n) for n in range(41, 45)]
    try:
        for store in stores.values():
            assert store.write(first) == 41
            assert store.write(first[:10]) == 0  # redelivered: nothing new
            with pytest.raises(ConflictingDuplicates) as conflict:
                store.write([*later, changed])
            assert list(conflict.value.stored) == [changed.entry_id]
            assert store.check_views() == []
        tables = {path: stores[path]._table for path in PATHS}
        assert rows(tables["lean"]) == rows(tables["sdk"])
        errors: dict[str, list[tuple[str, str]]] = {path: [] for path in PATHS}
        for fault in ("503", "part500", "stall"):
            proxy.fault = fault
            for path, store in stores.items():
                with pytest.raises((StoreUnavailable, StoreRejected)) as raised:
                    store.write([make_entry(50), make_entry(51)])
                errors[path].append((type(raised.value).__name__, str(raised.value)))
        proxy.fault = None
        assert errors["lean"] == errors["sdk"]
        assert [kind for kind, _ in errors["lean"]] == ["StoreUnavailable"] * 3
        assert rows(tables["lean"]) == rows(tables["sdk"])  # nothing half-written
    finally:
        proxy.fault = None
        for store in stores.values():
            store.delete_table()
            store.close()


def test_an_answer_of_another_form_is_an_error_never_a_success() -> None:
    with pytest.raises(Exception, match="cannot be read"):
        batch_answers("application/json", b"{}")
    with pytest.raises(Exception, match="cannot be read"):
        batch_answers("multipart/mixed; boundary=b", b"--b\r\n\r\nno status here\r\n--b--")
    whole = batch_answers(
        "multipart/mixed; boundary=b",
        b"--b\r\nContent-Type: application/http\r\n\r\nHTTP/1.1 400 Bad Request\r\n\r\n"
        b'{"odata.error":{"code":"InvalidInput","message":{"value":"0:bad"}}}\r\n--b--\r\n',
    )
    assert [(p.status, p.code) for p in whole] == [(400, "InvalidInput")]


def test_an_entity_outside_the_types_is_refused_before_sending() -> None:
    with pytest.raises(TypeError, match="Int32"):
        entity_json({"PartitionKey": "t", "RowKey": "r", "n": 2**31})
    with pytest.raises(TypeError, match="list"):
        entity_json({"PartitionKey": "t", "RowKey": "r", "n": [1]})
