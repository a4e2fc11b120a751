"""``psaudit serve``: the timeline pages and the JSON read API over the configured store, on
this machine (loopback by default, no key: the Functions app is what serves others, behind
its function keys).

Routes, the same as the Functions app's:

    GET /api/bankaccounts/{id}/timeline      the page
    GET /api/processsessions/{id}/timeline
    GET /api/bankaccounts/{id}/audit         JSON, as the HTTP read API
    GET /api/processsessions/{id}/audit
    GET /                                     a form that opens a timeline
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from shared.dataverse.names import Namer
from shared.errors import TransientError
from shared.stores.base import AuditStore
from shared.trail.reading import BadRequest, NotFound, TrailView, read_trail
from shared.trail.timeline import NO_NAMES
from shared.web.page import CONTENT_TYPE, HtmlPage, index_page, timeline_page

log = logging.getLogger(__name__)
_ROUTE = re.compile(r"/api/(bankaccounts|processsessions)/([^/]{1,200})/(timeline|audit)")
VIEWS = {"bankaccounts": TrailView.BANK_ACCOUNT, "processsessions": TrailView.PROCESS_SESSION}


def handler_for(
    store: AuditStore, dataverse_url: str | None, names: Namer | None = None
) -> type[BaseHTTPRequestHandler]:
    """A request handler over ``store`` (requests are served one at a time: one store)."""
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        server_version = "psaudit"
        sys_version = ""

        def log_message(self, format: str, *args: Any) -> None:
            log.info("%s %s", self.address_string(), format % args)

        def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _page(self, page: HtmlPage) -> None:
            self._send(
                page.status, page.body.encode(), page.headers | {"Content-Type": CONTENT_TYPE}
            )

        def _json(self, status: int, body: object) -> None:
            data = json.dumps(body).encode()
            self._send(
                status, data, {"Content-Type": "application/json", "Cache-Control": "no-store"}
            )

        def do_HEAD(self) -> None:
            self.do_GET()

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            params = dict(parse_qsl(parts.query, keep_blank_values=True))
            if parts.path in {"/", "/index.html"}:
                self._page(index_page("/timeline"))
                return
            if parts.path == "/timeline":  # the start page's form
                kind = params.get("kind", "")
                if kind in VIEWS and params.get("id"):
                    target = quote(params["id"].strip(), safe="")
                    self._send(303, b"", {"Location": f"/api/{kind}/{target}/timeline"})
                    return
            match = _ROUTE.fullmatch(parts.path)
            if match is None:
                self._json(404, {"error": "no such page: see / for the timelines"})
                return
            kind, raw_id, what = match.groups()
            view = VIEWS[kind]
            try:
                with lock:
                    if what == "timeline":
                        self._page(
                            timeline_page(
                                store,
                                view,
                                raw_id,
                                params,
                                dataverse_url=dataverse_url,
                                names=names or NO_NAMES,
                            )
                        )
                    else:
                        self._json(200, read_trail(store, view, raw_id, params))
            except BadRequest as exc:
                self._json(400, {"error": str(exc)})
            except NotFound as exc:
                self._json(404, {"error": str(exc)})
            except TransientError as exc:
                log.warning("audit read failed: %s", exc)
                self._json(503, {"error": "the audit store is unavailable; retry"})

    return Handler


def serve(
    store: AuditStore,
    host: str,
    port: int,
    dataverse_url: str | None = None,
    on_listening: Callable[[], None] | None = None,
    stop: threading.Event | None = None,
    names: Namer | None = None,
) -> None:
    """Serve until ``stop`` is set (or forever); ``on_listening`` once the port is bound;
    ``names`` from Dataverse on the pages (cached for the server's life, with a TTL)."""
    server = HTTPServer((host, port), handler_for(store, dataverse_url, names))
    server.timeout = 0.5
    if on_listening is not None:  # the port is bound: requests are taken from now on
        on_listening()
    try:
        while stop is None or not stop.is_set():
            server.handle_request()
    finally:
        server.server_close()
