"""A loopback relay in front of Azurite (a test and benchmark tool): it forwards every
request, after holding it for half a round trip and its answer for the other half (``delay``:
a network's latency, waited in a sleeping thread, so it costs no CPU), or plays one fault
that Azurite cannot: a 503 ``ServerBusy`` or 500 ``InternalError`` for the whole batch, a 202
whose one change-set part failed with 500, or an answer that never comes (a read timeout).

    python -m devtools.table_relay --target http://127.0.0.1:10002/devstoreaccount1 \
        --delay-ms 8          # prints "relaying on <endpoint>", then serves until stopped

The error bodies follow Microsoft's documented shapes: JSON ``odata.error`` with ``code`` and
``message.value`` (https://learn.microsoft.com/en-us/rest/api/storageservices/table-service-error-codes,
https://learn.microsoft.com/en-us/rest/api/storageservices/performing-entity-group-transactions
for the batch answer's multipart form).
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


def _error(code: str, text: str) -> bytes:
    return json.dumps(
        {"odata.error": {"code": code, "message": {"lang": "en-US", "value": text}}}
    ).encode()


class TableRelay:
    """``endpoint`` is Azurite's table endpoint as this relay serves it; ``fault`` is None
    (forward), "503", "500", "part500" or "stall" (answers after ``stall_seconds``); ``delay``
    is the round trip in seconds added to each forwarded request."""

    def __init__(self, target_endpoint: str, delay: float = 0.0, stand_in: bool = False) -> None:
        target = urlsplit(target_endpoint)
        self.delay = delay
        #: answer every request here, as Table Storage would for a writer that never meets a
        #: row: a benchmark's stand-in that costs next to no CPU (nothing is stored)
        self.stand_in = stand_in
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
                if proxy.stand_in:
                    if proxy.delay:
                        time.sleep(proxy.delay)
                    self._answer(*_stand_in(self.command, self.path, body))
                    return
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
                if proxy.delay:
                    time.sleep(proxy.delay / 2)
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


def _stand_in(method: str, path: str, body: bytes) -> tuple[int, bytes, str]:
    """What Table Storage answers a writer whose rows are all new: every operation of a batch
    succeeds, a table "already exists", an entity read finds nothing, a query is empty."""
    json_type = "application/json;odata=minimalmetadata;charset=utf-8"
    if path.endswith("/$batch"):
        parts = body.count(b"Content-Type: application/http")
        answer = (
            "--batchresponse_s\r\n"
            "Content-Type: multipart/mixed; boundary=changesetresponse_s\r\n\r\n"
        )
        answer += (
            "--changesetresponse_s\r\nContent-Type: application/http\r\n"
            "Content-Transfer-Encoding: binary\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n\r\n"
        ) * parts
        answer += "--changesetresponse_s--\r\n--batchresponse_s--\r\n"
        return 202, answer.encode(), "multipart/mixed; boundary=batchresponse_s"
    if method == "POST" and path.rstrip("/").endswith("/Tables"):
        return 409, _error("TableAlreadyExists", "The table specified already exists."), json_type
    if method == "GET" and "PartitionKey=" in path and "$filter" not in path:
        return 404, _error("ResourceNotFound", "The specified resource does not exist."), json_type
    if method == "GET":
        return 200, b'{"value":[]}', json_type
    return 204, b"", json_type


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


def main() -> int:
    parser = argparse.ArgumentParser(description="A delaying relay in front of Azurite's tables")
    parser.add_argument("--target", required=True, help="Azurite's table endpoint")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="round trip added")
    parser.add_argument(
        "--stand-in", action="store_true", help="answer every request here, store nothing"
    )
    args = parser.parse_args()
    relay = TableRelay(args.target, args.delay_ms / 1000, stand_in=args.stand_in)
    print(f"relaying on {relay.endpoint}", flush=True)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    stopped.wait()
    relay.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
