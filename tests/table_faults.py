"""A loopback proxy in front of Azurite that forwards every request, or plays one fault that
Azurite cannot: a 503 ``ServerBusy`` or 500 ``InternalError`` for the whole batch, a 202 whose
one change-set part failed with 500, or an answer that never comes (a read timeout).

The error bodies follow Microsoft's documented shapes: JSON ``odata.error`` with ``code`` and
``message.value`` (https://learn.microsoft.com/en-us/rest/api/storageservices/table-service-error-codes,
https://learn.microsoft.com/en-us/rest/api/storageservices/performing-entity-group-transactions
for the batch answer's multipart form).
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


def _error(code: str, text: str) -> bytes:
    return json.dumps(
        {"odata.error": {"code": code, "message": {"lang": "en-US", "value": text}}}
    ).encode()


class FaultProxy:
    """``endpoint`` is Azurite's table endpoint as this proxy serves it; ``fault`` is None
    (forward), "503", "500", "part500" or "stall" (answers after ``stall_seconds``)."""

    def __init__(self, target_endpoint: str) -> None:
        target = urlsplit(target_endpoint)
        self.fault: str | None = None
        self.stall_seconds = 5.0
        self.batches = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _answer(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.endswith("/$batch"):
                    proxy.batches += 1
                    if proxy.fault == "stall":
                        time.sleep(proxy.stall_seconds)
                        self.close_connection = True
                        return
                    if proxy.fault in ("503", "500"):
                        code = "ServerBusy" if proxy.fault == "503" else "InternalError"
                        self._answer(
                            int(proxy.fault),
                            _error(code, f"The server answered {proxy.fault}."),
                            "application/json;odata=minimalmetadata;charset=utf-8",
                        )
                        return
                    if proxy.fault == "part500":
                        self._answer(
                            202, _part_failure(), "multipart/mixed; boundary=batchresponse_f"
                        )
                        return
                connection = http.client.HTTPConnection(
                    str(target.hostname), target.port, timeout=30
                )
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                connection.request(self.command, self.path, body=body, headers=headers)
                answer = connection.getresponse()
                data = answer.read()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in _HOP:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                connection.close()

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_MERGE = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_port}{target.path}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _part_failure() -> bytes:
    error = _error("InternalError", "0:The server encountered an internal error.").decode()
    return (
        "--batchresponse_f\r\n"
        "Content-Type: multipart/mixed; boundary=changesetresponse_f\r\n\r\n"
        "--changesetresponse_f\r\nContent-Type: application/http\r\n"
        "Content-Transfer-Encoding: binary\r\n\r\n"
        "HTTP/1.1 500 Internal Server Error\r\nContent-ID: 1\r\nDataServiceVersion: 3.0;\r\n"
        "Content-Type: application/json;odata=minimalmetadata;charset=utf-8\r\n\r\n"
        f"{error}\r\n--changesetresponse_f--\r\n--batchresponse_f--\r\n"
    ).encode()
