"""A local HTTP stand-in for the Dataverse Web API (the real one cannot run here): the few
entity sets registration touches, kept in memory, checking every request's OData headers."""

from __future__ import annotations

import json
import re
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

TOKEN = "test-token"
PREFIX = "/api/data/v9.2/"
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
}
CLAUSE = re.compile(r"(\w+) eq (?:'((?:[^']|'')*)'|([0-9a-fA-F-]{36}))")


class WebApiStandIn:
    """The server, its tables, the requests it saw and any header violations."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[str, dict[str, Any]]] = {k: {} for k in KEYS}
        self.requests: list[tuple[str, str, dict[str, Any] | None]] = []
        self.violations: list[str] = []
        self.fail_next: int | None = None
        for name in ("Create", "Update", "Delete"):
            message_id = self._insert("sdkmessages", {"name": name})
            self._insert(
                "sdkmessagefilters",
                {"_sdkmessageid_value": message_id, "primaryobjecttypecode": "processsession"},
            )
            self._insert(
                "sdkmessagefilters",
                {"_sdkmessageid_value": message_id, "primaryobjecttypecode": "account"},
            )
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> WebApiStandIn:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def writes(self) -> list[tuple[str, str, dict[str, Any] | None]]:
        return [r for r in self.requests if r[0] != "GET"]

    def rows(self, entity_set: str) -> list[dict[str, Any]]:
        return list(self.tables[entity_set].values())

    def _insert(self, entity_set: str, row: dict[str, Any]) -> str:
        key = KEYS[entity_set]
        row = {key: str(uuid.uuid4()), **row}
        self.tables[entity_set][row[key]] = row
        return str(row[key])

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def _check_headers(self, has_body: bool) -> None:
                want = {
                    "Authorization": f"Bearer {TOKEN}",
                    "OData-Version": "4.0",
                    "OData-MaxVersion": "4.0",
                    "Accept": "application/json",
                }
                if has_body:
                    want["Content-Type"] = "application/json; charset=utf-8"
                for header, value in want.items():
                    if self.headers.get(header) != value:
                        stand_in.violations.append(
                            f"{self.command} {self.path}: {header}={self.headers.get(header)!r}"
                        )

            def _send(self, status: int, body: Any = None) -> None:
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json; odata.metadata=minimal")
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
                rest = path[len(PREFIX) :]
                match = re.fullmatch(r"(\w+)(?:\(([0-9a-fA-F-]{36})\))?", rest)
                return (match.group(1), match.group(2)) if match else ("", None)

            def _fail(self) -> bool:
                if stand_in.fail_next is not None:
                    status, stand_in.fail_next = stand_in.fail_next, None
                    self._send(
                        status,
                        {
                            "error": {
                                "code": "0x80040220",
                                "message": "Principal user is missing prvCreateServiceEndpoint",
                            }
                        },
                    )
                    return True
                return False

            def do_GET(self) -> None:
                self._check_headers(False)
                stand_in.requests.append(("GET", self.path, None))
                entity_set, _ = self._route()
                if entity_set not in KEYS:
                    self._send(404, {"error": {"message": "no such entity set"}})
                    return
                query = parse_qs(urlparse(self.path).query)
                odata_filter = unquote(query.get("$filter", [""])[0])
                clauses = {
                    m.group(1): m.group(2).replace("''", "'")
                    if m.group(2) is not None
                    else m.group(3)
                    for m in CLAUSE.finditer(odata_filter)
                }
                rows = [
                    r
                    for r in stand_in.tables[entity_set].values()
                    if all(str(r.get(k, "")).lower() == str(v).lower() for k, v in clauses.items())
                ]
                select = query.get("$select", [""])[0].split(",")
                shown = [
                    {k: v for k, v in r.items() if k in select and k != "saskey"} for r in rows
                ]
                self._send(200, {"value": shown})

            def do_POST(self) -> None:
                self._check_headers(True)
                body = self._body()
                stand_in.requests.append(("POST", self.path, body))
                if self._fail():
                    return
                entity_set, _ = self._route()
                row = _resolve(body or {})
                row_id = stand_in._insert(entity_set, row)
                self._send(201, stand_in.tables[entity_set][row_id])

            def do_PATCH(self) -> None:
                self._check_headers(True)
                body = self._body()
                stand_in.requests.append(("PATCH", self.path, body))
                if self._fail():
                    return
                entity_set, row_id = self._route()
                row = stand_in.tables.get(entity_set, {}).get(row_id or "")
                if row is None:
                    self._send(404, {"error": {"message": "not found"}})
                    return
                row.update(_resolve(body or {}))
                self._send(200, row)

        return Handler


def _resolve(body: dict[str, Any]) -> dict[str, Any]:
    """``x@odata.bind: /set(id)`` -> ``_x_value: id``, as Dataverse stores lookups."""
    row = {}
    for key, value in body.items():
        if key in BINDS:
            row[BINDS[key]] = value.rsplit("(", 1)[1].rstrip(")")
        else:
            row[key] = value
    return row
