"""A local HTTP double of the Dataverse Web API (the real one cannot run here), the project's
only one: registration's tables and ``processsessions``, kept in memory.

It speaks OData as Microsoft documents it, and nothing more:

* headers (``OData-Version``, ``OData-MaxVersion``, ``Accept``, a bearer token; 401 with
  ``WWW-Authenticate`` without one): https://learn.microsoft.com/power-apps/developer/data-platform/webapi/compose-http-requests-handle-errors
  and .../webapi/authenticate-web-api;
* ``$select``, ``$filter`` (``eq ne ge gt le lt`` joined by ``and``; date-times unquoted,
  strings quoted, GUIDs bare), ``$orderby``:
  .../webapi/query/select-columns, .../webapi/query/filter-rows, .../webapi/query/order-rows;
* paging: ``Prefer: odata.maxpagesize=N`` answered with ``Preference-Applied`` and an
  ``@odata.nextLink`` carrying a ``$skiptoken`` paging cookie; the double can page smaller than
  asked, as the service may: .../webapi/query/page-results;
* lookups as ``_x_value`` with ``@Microsoft.Dynamics.CRM.lookuplogicalname`` and
  ``@OData.Community.Display.V1.FormattedValue`` annotations, only when ``Prefer:
  odata.include-annotations`` asks for them: .../webapi/query/select-columns#formatted-values;
* a single row by id, 404 with Dataverse's error body (``0x80040217``) when it does not exist:
  .../webapi/retrieve-entity-using-web-api;
* service protection limits: injectable 429s with ``Retry-After`` (seconds):
  https://learn.microsoft.com/power-apps/developer/data-platform/api-limits;
* ``regardingobjecttypecode``, the regarding's table as a column (EntityName), as the
  processsession reference lists it: .../reference/entities/processsession;
* hostile answers (``hostile``): whatever a broken or malicious server may send in place of a
  GET's answer (foreign links, endless or trickled bodies, redirects, deep nesting).

Every request is recorded with its headers and the monotonic time it arrived, so that tests
can check waits and what was asked.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlparse

TOKEN = "test-token"
PREFIX = "/api/data/v9.2/"
LOGICAL = "Microsoft.Dynamics.CRM.lookuplogicalname"
FORMATTED = "OData.Community.Display.V1.FormattedValue"
BINDS = {
    "sdkmessageid@odata.bind": "_sdkmessageid_value",
    "sdkmessagefilterid@odata.bind": "_sdkmessagefilterid_value",
    "eventhandler_serviceendpoint@odata.bind": "_eventhandler_value",
    "sdkmessageprocessingstepid@odata.bind": "_sdkmessageprocessingstepid_value",
}
KEYS = {
    "serviceendpoints": "serviceendpointid",
    "sdkmessages": "sdkmessageid",
    "sdkmessagefilters": "sdkmessagefilterid",
    "sdkmessageprocessingsteps": "sdkmessageprocessingstepid",
    "sdkmessageprocessingstepimages": "sdkmessageprocessingstepimageid",
    "processsessions": "processsessionid",
}
#: lookups of processsession: column -> (hidden logical-name field, hidden name field)
LOOKUPS = {"_regardingobjectid_value": ("regarding_logical", "regarding_name")}
_GUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_CLAUSE = re.compile(
    r"\s*(\w+) (eq|ne|ge|gt|le|lt) ('(?:[^']|'')*'|null|" + _GUID + r"|"
    r"\d{4}-\d\d-\d\dT[0-9:.]+(?:Z|[+-]\d\d:\d\d)|-?\d+)\s*"
)
_DATE = re.compile(r"\d{4}-\d\d-\d\dT")


@dataclass
class Seen:
    """One request as the double received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None
    at: float


def iso(moment: datetime) -> str:
    """A date-time as the Web API writes it: UTC, seconds, ``Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class DataverseDouble:
    """The server, its tables, what it saw, and the failures to inject."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[str, dict[str, Any]]] = {k: {} for k in KEYS}
        self.seen: list[Seen] = []
        self.violations: list[str] = []
        self.fail_next: int | None = None
        #: statuses (429 / 503) the next requests get, each with its Retry-After (or None)
        self.faults: deque[tuple[int, int | None]] = deque()
        #: the double's own page size: it pages smaller than asked when this is smaller
        self.server_page_size = 5000
        #: hostile answers: each takes the next admitted GET and writes whatever it likes
        self.hostile: deque[Callable[[BaseHTTPRequestHandler], None]] = deque()
        #: drop the lookup-logical-name annotation (a proxy or endpoint that ignores Prefer)
        self.drop_annotations = False
        #: rows also carry regardingobjecttypecode (the documented column of the table)
        self.type_code_column = True
        #: systemusers by id: their fullname (``systemusers(<id>)?$select=fullname``)
        self.users: dict[str, str] = {}
        #: metadata by table: {"DisplayNames": {column: label}, "Choices": {(kind, column):
        #: {value: label}}, "PrimaryNameAttribute", "EntitySetName"}; rows of other tables
        #: in ``records`` by entity set
        self.metadata: dict[str, dict[str, Any]] = {}
        self.records: dict[str, dict[str, dict[str, Any]]] = {}
        self._lock = threading.Lock()
        for name in ("Create", "Update", "Delete"):
            message_id = self._insert("sdkmessages", {"name": name})
            for table in ("processsession", "account"):
                self._insert(
                    "sdkmessagefilters",
                    {"_sdkmessageid_value": message_id, "primaryobjecttypecode": table},
                )
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> DataverseDouble:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    # what tests set up
    def add_session(
        self,
        session_id: str | None = None,
        *,
        modifiedon: datetime,
        createdon: datetime | None = None,
        regarding: tuple[str, str] | None = None,
        regarding_name: str | None = None,
        name: str = "dialog",
        modifiedby: str | None = None,
    ) -> str:
        """A processsession row; ``regarding`` is (logical name, id)."""
        row = {
            "processsessionid": session_id or str(uuid.uuid4()),
            "name": name,
            "createdon": iso(createdon or modifiedon),
            "modifiedon": iso(modifiedon),
            "statecode": 0,
            "statuscode": 1,
            "_modifiedby_value": modifiedby or str(uuid.uuid5(uuid.NAMESPACE_URL, "user")),
            "_regardingobjectid_value": regarding[1] if regarding else None,
            "regardingobjecttypecode": regarding[0] if regarding else None,
            "regarding_logical": regarding[0] if regarding else None,
            "regarding_name": regarding_name,
        }
        with self._lock:
            self.tables["processsessions"][str(row["processsessionid"])] = row
        return str(row["processsessionid"])

    def delete_session(self, session_id: str) -> None:
        with self._lock:
            del self.tables["processsessions"][session_id]

    def throttle(self, count: int, retry_after: int | None = 1, status: int = 429) -> None:
        """The next ``count`` requests are answered ``status`` with this Retry-After."""
        self.faults.extend([(status, retry_after)] * count)

    def requests(self) -> list[tuple[str, str, dict[str, Any] | None]]:
        return [(s.method, s.path, s.body) for s in self.seen]

    def writes(self) -> list[tuple[str, str, dict[str, Any] | None]]:
        return [(s.method, s.path, s.body) for s in self.seen if s.method != "GET"]

    def rows(self, entity_set: str) -> list[dict[str, Any]]:
        return list(self.tables[entity_set].values())

    def _insert(self, entity_set: str, row: dict[str, Any]) -> str:
        key = KEYS[entity_set]
        row = {key: str(uuid.uuid4()), **row}
        self.tables[entity_set][row[key]] = row
        return str(row[key])

    # the OData of a GET
    def query(
        self, entity_set: str, params: dict[str, str], prefer: dict[str, str], base_url: str
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        rows = list(self.tables[entity_set].values())
        try:
            clauses = _clauses(params.get("$filter", ""))
        except ValueError as exc:
            return 400, _error("0x80060888", str(exc)), {}
        rows = [r for r in rows if all(_holds(r, c) for c in clauses)]
        for part in reversed([p for p in params.get("$orderby", "").split(",") if p.strip()]):
            column, _, direction = part.strip().partition(" ")
            rows.sort(key=lambda r: str(r.get(column) or ""), reverse=direction == "desc")
        asked = int(prefer.get("odata.maxpagesize", "5000") or 5000)
        size = max(1, min(asked, self.server_page_size, 5000))
        start = 0
        if "$skiptoken" in params:
            match = re.search(r'pagenumber="(\d+)"', params["$skiptoken"])
            if match is None:
                return 400, _error("0x80040203", "Invalid $skiptoken"), {}
            start = (int(match.group(1)) - 1) * size
        page = rows[start : start + size]
        answer: dict[str, Any] = {
            "@odata.context": f"{base_url}$metadata#{entity_set}",
            "value": [self.shown(r, params, prefer) for r in page],
        }
        if start + size < len(rows):
            cookie = f'<cookie pagenumber="{start // size + 2}" istracking="False" />'
            rest = {k: v for k, v in params.items() if k != "$skiptoken"}
            answer["@odata.nextLink"] = (
                f"{base_url}{entity_set}?{urlencode(rest, quote_via=quote, safe='$,')}"
                f"&$skiptoken={quote(cookie)}"
            )
        applied = {"Preference-Applied": f"odata.maxpagesize={asked}"}
        return 200, answer, applied if "odata.maxpagesize" in prefer else {}

    def shown(self, row: dict[str, Any], params: dict[str, str], prefer: dict[str, str]) -> Any:
        hidden = {"regarding_logical", "regarding_name", "saskey"}
        if not self.type_code_column:
            hidden.add("regardingobjecttypecode")
        select = [c for c in params.get("$select", "").split(",") if c] or [
            c for c in row if c not in hidden
        ]
        annotations = prefer.get("odata.include-annotations", "").strip('"')
        wanted = {a.strip() for a in annotations.split(",") if a.strip()}
        out: dict[str, Any] = {"@odata.etag": 'W/"1"'}
        for column in select:
            if column == "saskey" or (column not in row and column not in LOOKUPS):
                continue
            if column == "regardingobjecttypecode" and not self.type_code_column:
                continue
            out[column] = row.get(column)
            if column in LOOKUPS and row.get(column) is not None:
                logical, name = LOOKUPS[column]
                if (
                    wanted & {"*", LOGICAL, "Microsoft.Dynamics.CRM.*"}
                    and not self.drop_annotations
                ):
                    out[f"{column}@{LOGICAL}"] = row[logical]
                if wanted & {"*", FORMATTED, "OData.Community.Display.V1.*"} and row.get(name):
                    out[f"{column}@{FORMATTED}"] = row[name]
        key = next((k for k in KEYS.values() if k in row), None)
        if key is not None:
            out[key] = row[key]
        return out

    def _metadata_answer(self, handler: Any) -> bool:
        """systemusers, EntityDefinitions and other tables' rows, in Microsoft's documented
        shapes (.../webapi/query-metadata-web-api, .../webapi/retrieve-entity-using-web-api):
        True when it answered."""
        path = unquote(urlparse(handler.path).path)[len(PREFIX) :]
        user = re.fullmatch(r"systemusers\((" + _GUID + r")\)", path)
        if user is not None:
            name = self.users.get(user.group(1).lower())
            if name is None:
                handler._send(404, _error("0x80040217", "systemuser Does Not Exist"))
            else:
                handler._send(200, {"systemuserid": user.group(1), "fullname": name})
            return True
        table = re.fullmatch(
            r"EntityDefinitions\(LogicalName='(\w+)'\)(/Attributes(?:/Microsoft\.Dynamics\.CRM\.(\w+))?)?",
            path,
        )
        if table is not None:
            meta = self.metadata.get(table.group(1))
            if meta is None:
                handler._send(404, _error("0x80040217", "Could not find an entity"))
            elif table.group(2) is None:
                handler._send(
                    200,
                    {
                        "PrimaryNameAttribute": meta.get("PrimaryNameAttribute"),
                        "EntitySetName": meta.get("EntitySetName"),
                    },
                )
            elif table.group(3) is None:
                handler._send(
                    200,
                    {
                        "value": [
                            {
                                "LogicalName": column,
                                "DisplayName": {
                                    "UserLocalizedLabel": {"Label": label, "LanguageCode": 1033},
                                    "LocalizedLabels": [],
                                },
                            }
                            for column, label in meta.get("DisplayNames", {}).items()
                        ]
                    },
                )
            else:
                kind = table.group(3)
                handler._send(
                    200,
                    {
                        "value": [
                            {
                                "LogicalName": column,
                                "OptionSet": {
                                    "Options": [
                                        {
                                            "Value": value,
                                            "Label": {
                                                "UserLocalizedLabel": {
                                                    "Label": label,
                                                    "LanguageCode": 1033,
                                                }
                                            },
                                        }
                                        for value, label in options.items()
                                    ]
                                },
                            }
                            for (of_kind, column), options in meta.get("Choices", {}).items()
                            if of_kind == kind
                        ]
                    },
                )
            return True
        row = re.fullmatch(r"(\w+)\((" + _GUID + r")\)", path)
        if row is not None and row.group(1) in self.records:
            found = self.records[row.group(1)].get(row.group(2).lower())
            if found is None:
                handler._send(404, _error("0x80040217", "Does Not Exist"))
            else:
                handler._send(200, found)
            return True
        return False

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        double = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: Any) -> None:
                pass

            def _check_headers(self, has_body: bool) -> None:
                want = {"OData-Version": "4.0", "OData-MaxVersion": "4.0"}
                want["Accept"] = "application/json"
                if has_body:
                    want["Content-Type"] = "application/json; charset=utf-8"
                for header, value in want.items():
                    if self.headers.get(header) != value:
                        double.violations.append(
                            f"{self.command} {self.path}: {header}={self.headers.get(header)!r}"
                        )

            def _send(
                self, status: int, body: Any = None, headers: dict[str, str] | None = None
            ) -> None:
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json; odata.metadata=minimal")
                self.send_header("OData-Version", "4.0")
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> dict[str, Any] | None:
                length = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(length)) if length else None

            def _route(self) -> tuple[str, str | None]:
                path = urlparse(self.path).path
                if not path.startswith(PREFIX):
                    return "", None
                match = re.fullmatch(r"(\w+)(?:\((" + _GUID + r")\))?", path[len(PREFIX) :])
                if match is None:
                    return "", None
                return match.group(1), match.group(2).lower() if match.group(2) else None

            def _admitted(self, body: dict[str, Any] | None) -> bool:
                """Record the request; answer 401 or an injected fault instead when due."""
                double.seen.append(
                    Seen(self.command, self.path, dict(self.headers), body, time.monotonic())
                )
                self._check_headers(body is not None)
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    self._send(
                        401,
                        _error("0x80040220", "The user is not authenticated"),
                        {"WWW-Authenticate": 'Bearer authorization_uri="https://login.example"'},
                    )
                    return False
                if double.faults:
                    status, wait = double.faults.popleft()
                    headers = {"Retry-After": str(wait)} if wait is not None else {}
                    self._send(
                        status,
                        _error(
                            "0x80072322",
                            "Number of requests exceeded the limit of 6000 over time window "
                            "of 300 seconds.",
                        ),
                        headers,
                    )
                    return False
                if double.fail_next is not None and self.command != "GET":
                    status, double.fail_next = double.fail_next, None
                    self._send(
                        status,
                        _error("0x80040220", "Principal user is missing prvCreateServiceEndpoint"),
                    )
                    return False
                return True

            def do_GET(self) -> None:
                if double.hostile:  # whatever the server likes, whoever asks
                    double.seen.append(
                        Seen(self.command, self.path, dict(self.headers), None, time.monotonic())
                    )
                    double.hostile.popleft()(self)
                    return
                if not self._admitted(None):
                    return
                if double._metadata_answer(self):
                    return
                entity_set, row_id = self._route()
                if entity_set not in KEYS:
                    self._send(404, _error("0x8006088a", "Resource not found for the segment"))
                    return
                params = {k: v[0] for k, v in parse_qs(urlparse(self.path).query).items()}
                prefer = _prefer(self.headers.get("Prefer", ""))
                base = f"{double.url}{PREFIX}"
                if row_id is not None:
                    row = double.tables[entity_set].get(row_id)
                    if row is None:
                        self._send(
                            404,
                            _error(
                                "0x80040217",
                                f"Entity '{entity_set[:-1]}' With Id = {row_id} Does Not Exist",
                            ),
                        )
                        return
                    shown = double.shown(row, params, prefer)
                    self._send(
                        200, {"@odata.context": f"{base}$metadata#{entity_set}/$entity"} | shown
                    )
                    return
                status, answer, headers = double.query(entity_set, params, prefer, base)
                self._send(status, answer, headers)

            def do_POST(self) -> None:
                body = self._body()
                if not self._admitted(body):
                    return
                entity_set, _ = self._route()
                row_id = double._insert(entity_set, _resolve(body or {}))
                self._send(201, double.tables[entity_set][row_id])

            def do_PATCH(self) -> None:
                body = self._body()
                if not self._admitted(body):
                    return
                entity_set, row_id = self._route()
                row = double.tables.get(entity_set, {}).get(row_id or "")
                if row is None:
                    self._send(404, _error("0x80040217", "Does Not Exist"))
                    return
                row.update(_resolve(body or {}))
                self._send(200, row)

        return Handler


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _prefer(header: str) -> dict[str, str]:
    """``Prefer`` preferences by name; values may hold quoted commas."""
    found: dict[str, str] = {}
    for match in re.finditer(r'([\w.-]+)(?:=("[^"]*"|[^,]*))?', header):
        found[match.group(1)] = (match.group(2) or "").strip()
    return found


def _clauses(text: str) -> list[tuple[str, str, Any]]:
    """``a eq 'x' and b ge 2026-01-01T00:00:00Z`` as (column, operator, value) triples;
    ValueError for anything else (Dataverse answers 400)."""
    text = unquote(text).strip()
    if not text:
        return []
    found = []
    for part in re.split(r"\s+and\s+", text):
        match = _CLAUSE.fullmatch(part)
        if match is None:
            raise ValueError(f"Syntax error in $filter near {part[:60]!r}")
        column, operator, raw = match.groups()
        value: Any
        if raw.startswith("'"):
            value = raw[1:-1].replace("''", "'")
        elif raw == "null":
            value = None
        elif _DATE.match(raw):
            value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        else:
            value = raw.lower()
        found.append((column, operator, value))
    return found


def _holds(row: dict[str, Any], clause: tuple[str, str, Any]) -> bool:
    column, operator, value = clause
    have = row.get(column)
    if isinstance(value, datetime):
        if have is None:
            return False
        have = datetime.fromisoformat(str(have).replace("Z", "+00:00"))
    elif value is not None:
        have, value = str(have if have is not None else "").lower(), str(value).lower()
    compare = {
        "eq": lambda a, b: a == b,
        "ne": lambda a, b: a != b,
        "ge": lambda a, b: a >= b,
        "gt": lambda a, b: a > b,
        "le": lambda a, b: a <= b,
        "lt": lambda a, b: a < b,
    }[operator]
    return bool(compare(have, value))


def _resolve(body: dict[str, Any]) -> dict[str, Any]:
    """``x@odata.bind: /set(id)`` -> ``_x_value: id``, as Dataverse stores lookups."""
    row = {}
    for key, value in body.items():
        if key in BINDS:
            row[BINDS[key]] = value.rsplit("(", 1)[1].rstrip(")")
        else:
            row[key] = value
    return row
