"""The Python worker process, as the Functions host starts it: one process per app.

Started by ``host.py`` with the host's own arguments (``--host``, ``--port``,
``--functions-grpc-max-message-length``: the Service Bus extension's settlement client reads
them from ``sys.argv``) and ``--app-dir``. The host's gRPC event stream is replaced by frames on
stdin/stdout (4-byte big-endian length + a serialized ``StreamingMessage``); each request goes
to ``azure_functions_runtime.handle_event`` exactly as the proxy worker passes it. The app's own
output and logs go to stderr so that stdout carries frames only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import struct
import sys
from pathlib import Path
from typing import IO, Any


class WorkerRequest:
    """What the proxy worker hands the library: the message, its name and host properties."""

    def __init__(self, name: str, request: Any, properties: dict[str, Any]) -> None:
        self.name = name
        self.request = request
        self.properties = properties


def read_frame(stream: IO[bytes]) -> bytes | None:
    header = stream.read(4)
    if len(header) < 4:
        return None
    (size,) = struct.unpack(">I", header)
    return stream.read(size)


def write_frame(stream: IO[bytes], payload: bytes) -> None:
    stream.write(struct.pack(">I", len(payload)) + payload)
    stream.flush()


async def serve(app_dir: Path, host: str, frames_in: IO[bytes], frames_out: IO[bytes]) -> None:
    import azure_functions_runtime as runtime
    import functionrpc_protos as protos
    from azure_functions_runtime import handle_event

    runtime.start_threadpool_executor()
    handlers = {
        "worker_init_request": (handle_event.worker_init_request, "worker_init_response"),
        "functions_metadata_request": (
            handle_event.functions_metadata_request,
            "function_metadata_response",
        ),
        "function_load_request": (handle_event.function_load_request, "function_load_response"),
        "invocation_request": (handle_event.invocation_request, "invocation_response"),
    }
    while (frame := read_frame(frames_in)) is not None:
        message = protos.StreamingMessage.FromString(frame)
        kind = message.WhichOneof("content")
        handler, response_field = handlers[kind]
        response = await handler(WorkerRequest(kind, message, {"host": host, "protos": protos}))
        reply = protos.StreamingMessage(request_id=message.request_id)
        getattr(reply, response_field).CopyFrom(response)
        write_frame(frames_out, reply.SerializeToString())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", required=True)
    parser.add_argument("--functions-grpc-max-message-length", required=True)
    parser.add_argument("--app-dir", required=True, type=Path)
    parser.add_argument("--runtime-lib", required=True, type=Path)
    args = parser.parse_args()
    # The real worker puts the script root first on sys.path and works in it.
    sys.path[:0] = [str(args.app_dir), str(args.runtime_lib)]
    os.chdir(args.app_dir)
    frames_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    asyncio.run(serve(args.app_dir, args.host, sys.stdin.buffer, frames_out))


if __name__ == "__main__":
    main()
