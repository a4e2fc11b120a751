"""A lean entity group transaction for the Table store (``AUDIT_TABLE_TRANSACTIONS=lean``).

The body of one ``$batch`` request is written here directly, and its answer read directly,
instead of through ``TableClient.submit_transaction``: the SDK builds every operation as an
``HttpRequest``, runs each through policies, serializes them with the ``email`` package and
parses the answer the same way, which cost about 2 ms of CPU per entry, 81% of the worker's
(``make bench``, ``bench.table_batch``). The request still goes through the table client's own
azure-core pipeline: the same credential (shared key or Microsoft Entra token), the same
connection and read timeouts, retries off (the store pipeline retries within its budget).

The format is the documented OData batch of Table Storage, one change set per request
(https://learn.microsoft.com/en-us/rest/api/storageservices/performing-entity-group-transactions):

    POST <account>/$batch                      Content-Type: multipart/mixed; boundary=batch_<id>
    --batch_<id>
    Content-Type: multipart/mixed; boundary=changeset_<id>

    --changeset_<id>
    Content-Type: application/http
    Content-Transfer-Encoding: binary
    Content-ID: <n>

    POST <account>/<table> HTTP/1.1                          (Insert Entity: a create)
    PUT <account>/<table>(PartitionKey='<pk>',RowKey='<rk>') HTTP/1.1    (Insert Or Replace)
    Content-Type: application/json
    Accept: application/json;odata=minimalmetadata
    Prefer: return-no-content
    DataServiceVersion: 3.0
    Content-Length: <bytes>

    <the entity as JSON, typed with @odata.type where JSON alone cannot say it>
    --changeset_<id>--
    --batch_<id>--

The service answers 202 with one part per operation when all succeed, or a single part with
the first failure's status and an ``odata.error`` (code, and a message that starts with the
failing operation's index). Errors raised are the SDK's own types with the same
``status_code`` and ``error_code`` as ``submit_transaction`` raises for the same request
(``TableTransactionError`` for a failed operation, ``RequestTooLargeError`` for 413, the SDK's
own decoding of any other answer); ``tests/test_table_batch_contract.py`` runs both side by side
against Azurite and compares every row and every error.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote

from azure.core.exceptions import HttpResponseError
from azure.core.rest import HttpRequest
from azure.data.tables import RequestTooLargeError, TableClient, TableTransactionError

Operation = Literal["create", "upsert"]
#: An answer to one transaction of at most 100 operations is a few kilobytes; past this it is
#: not an answer of Table Storage (read no further).
MAX_ANSWER_BYTES = 4 * 1024 * 1024
_INT32 = range(-(2**31), 2**31)
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3})")
_BOUNDARY = re.compile(r'boundary="?([^";\s]+)"?', re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class PartAnswer:
    """One operation's answer in a batch response."""

    status: int
    code: str = ""
    message: str = ""


def entity_json(entity: Mapping[str, Any]) -> str:
    """An entity's JSON as Table Storage reads it, with the same property types the SDK sends
    (``_add_entity_properties``): str as Edm.String, bool, int within Int32, float as
    Edm.Double, datetime as Edm.DateTime in UTC, bytes as Edm.Binary; None is left out."""
    out: dict[str, Any] = {}
    for name, value in entity.items():
        kind = type(value)
        if kind is str or kind is bool:
            out[name] = value
        elif kind is int:
            if value not in _INT32:
                raise TypeError(f"{name}: {value} does not fit Edm.Int32")
            out[name] = value
        elif kind is datetime:
            out[name] = value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            out[f"{name}@odata.type"] = "Edm.DateTime"
        elif kind is bytes:
            out[name] = base64.b64encode(value).decode("ascii")
            out[f"{name}@odata.type"] = "Edm.Binary"
        elif kind is float:
            out[name] = value
            out[f"{name}@odata.type"] = "Edm.Double"
        elif value is not None:
            raise TypeError(f"{name}: a {kind.__name__} is not a Table property type here")
    return json.dumps(out, separators=(",", ":"))


def _key(value: str) -> str:
    """A PartitionKey or RowKey in an entity's address: quotes doubled, then URL-encoded."""
    return quote(value.replace("'", "''"), safe="")


class LeanTransactions:
    """Entity group transactions written and read here, sent through ``table``'s pipeline."""

    def __init__(self, table: TableClient) -> None:
        # The same endpoint the SDK's own batches use (its account URL, path-style included).
        self._base = f"{table.scheme}://{table._primary_hostname}"
        self._table_url = f"{self._base}/{quote(table.table_name, safe='')}"
        self._client = table._client  # the generated client: its pipeline
        self._version = table.api_version

    def body(self, operations: Sequence[tuple[Operation, Mapping[str, Any]]]) -> tuple[str, bytes]:
        """The request's boundary and body for ``operations`` (one partition, at most 100)."""
        if any("PartitionKey" not in e or "RowKey" not in e for _, e in operations):
            raise ValueError("PartitionKey and/or RowKey were not provided in entity")
        partitions = {entity["PartitionKey"] for _, entity in operations}
        if len(partitions) > 1:  # refused before sending, as the SDK does
            raise ValueError("Partition Keys in the batch must all be the same.")
        batch, changeset = f"batch_{uuid.uuid4()}", f"changeset_{uuid.uuid4()}"
        pieces = [f"--{batch}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n"]
        for index, (operation, entity) in enumerate(operations):
            if operation == "create":
                line = f"POST {self._table_url} HTTP/1.1"
            elif operation == "upsert":
                pk, rk = _key(entity["PartitionKey"]), _key(entity["RowKey"])
                line = f"PUT {self._table_url}(PartitionKey='{pk}',RowKey='{rk}') HTTP/1.1"
            else:
                raise ValueError(f"unknown transaction operation {operation!r}")
            data = entity_json(entity)  # ASCII (json.dumps escapes the rest): a char a byte
            pieces.append(
                f"--{changeset}\r\nContent-Type: application/http\r\n"
                f"Content-Transfer-Encoding: binary\r\nContent-ID: {index}\r\n\r\n"
                f"{line}\r\nContent-Type: application/json\r\n"
                "Accept: application/json;odata=minimalmetadata\r\nPrefer: return-no-content\r\n"
                f"DataServiceVersion: 3.0\r\nContent-Length: {len(data)}\r\n\r\n"
                f"{data}\r\n"
            )
        pieces.append(f"--{changeset}--\r\n--{batch}--\r\n")
        return batch, "".join(pieces).encode()

    def submit(self, operations: Sequence[tuple[Operation, Mapping[str, Any]]]) -> None:
        """Run ``operations`` as one transaction: all or nothing; raises as the SDK does."""
        boundary, body = self.body(operations)
        request = HttpRequest(
            "POST",
            f"{self._base}/$batch",
            headers={
                "x-ms-version": self._version,
                "DataServiceVersion": "3.0",
                "MaxDataServiceVersion": "3.0;NetFx",
                "Content-Type": f"multipart/mixed; boundary={boundary}",
                "Accept": "application/json",
            },
            content=body,
        )
        response = self._client.send_request(request, stream=True)
        try:
            if response.status_code != 202:
                response.read()
                if response.status_code == 413:
                    raise _too_large(_error_of(response.status_code, response.content))
                from azure.data.tables._error import _decode_error  # the SDK's own reading

                raise _decode_error(response)  # type: ignore[no-untyped-call]
            answer = _read_capped(response)
        finally:
            response.close()
        parts = batch_answers(response.headers.get("Content-Type", ""), answer)
        failed = next((p for p in parts if not 200 <= p.status < 300), None)
        if failed is not None:
            raise _too_large(failed) if failed.status == 413 else _failure(failed)
        if len(parts) != len(operations):
            raise HttpResponseError(
                message=f"Table Storage answered {len(parts)} of {len(operations)} operations "
                "of a transaction: an answer that cannot be read"
            )


def _read_capped(response: Any) -> bytes:
    chunks, size = [], 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise HttpResponseError(
                message=f"Table Storage's answer to a transaction passed {MAX_ANSWER_BYTES:,} "
                "bytes: not read further"
            )
        chunks.append(chunk)
    return b"".join(chunks)


def batch_answers(content_type: str, body: bytes) -> list[PartAnswer]:
    """Each operation's answer in a ``$batch`` response, in order. A response that does not
    have the documented form raises HttpResponseError (retried as a failed request)."""
    outer = _boundary(content_type)
    segments = body.split(b"--" + outer)
    if len(segments) < 3:
        raise _unreadable("no batch part")
    head, _, rest = segments[1].lstrip(b"\r\n").partition(b"\r\n\r\n")
    match = _BOUNDARY.search(head.decode("latin-1"))
    if match is None:  # the batch failed as a whole: one application/http part
        return [_part(segments[1])]
    inner = match.group(1).encode("latin-1")
    parts = rest.split(b"--" + inner)
    return [_part(p) for p in parts[1:] if not p.startswith(b"--")]


def _boundary(content_type: str) -> bytes:
    match = _BOUNDARY.search(content_type)
    if match is None or not content_type.lower().startswith("multipart/mixed"):
        raise _unreadable(f"content type {content_type[:80]!r}")
    return match.group(1).encode("latin-1")


def _part(part: bytes) -> PartAnswer:
    """One application/http part: its status line, and an odata.error when it failed."""
    match = _STATUS_LINE.search(part)
    if match is None:
        raise _unreadable("a part without a status line")
    status = int(match.group(1))
    if 200 <= status < 300:
        return PartAnswer(status)
    _, _, payload = part[match.end() :].partition(b"\r\n\r\n")
    return _error_of(status, payload.strip())


def _error_of(status: int, payload: bytes) -> PartAnswer:
    """The code and message of an ``odata.error`` (JSON) answer; empty when there is none."""
    try:
        error = json.loads(payload)["odata.error"]
        return PartAnswer(status, str(error.get("code", "")), str(error["message"]["value"]))
    except (ValueError, KeyError, TypeError, AttributeError):
        return PartAnswer(status, "", payload[:300].decode("utf-8", "replace"))


def _failure(part: PartAnswer) -> TableTransactionError:
    """The error ``submit_transaction`` raises for the same failed operation."""
    error = TableTransactionError(message=f"{part.message}\nErrorCode:{part.code}")
    error.status_code = part.status
    setattr(error, "error_code", part.code)  # as the SDK sets it  # noqa: B010
    return error


def _too_large(part: PartAnswer) -> RequestTooLargeError:
    message = part.message or "The transaction request was too large"
    error = RequestTooLargeError(message=f"{message}\nErrorCode:{part.code}")
    error.status_code = 413
    setattr(error, "error_code", part.code)  # noqa: B010
    return error


def _unreadable(what: str) -> HttpResponseError:
    return HttpResponseError(message=f"Table Storage's batch answer cannot be read: {what}")
