"""A stand-in for the Functions host: the real Python worker library, driven over its own types.

``FunctionsHost`` starts ``worker.py`` in a process of its own (the runtime keeps module-global
registries, and the Service Bus extension's ``ServiceBusMessageActions`` is a process singleton
bound to the address in ``sys.argv``), serves the extension's **Settlement** gRPC service on
loopback and records every call, then talks to the worker as the host does:
WorkerInit -> FunctionsMetadata (v2 indexing) -> FunctionLoad -> Invocation.

What it proves: the app indexes in ``azure-functions-runtime``, the binding metadata the host
would read, that invocations decode the host's input and settle over gRPC. What it does not:
the host's own routing, keys and scaling, host.json batch settings, what the host does after a
failed invocation, and a real Service Bus namespace.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from azurefunctions.extensions.bindings.protos import settlement_pb2_grpc
from google.protobuf.empty_pb2 import Empty

from tests.functions_host.amqp import HostMessage, binding_content
from tests.functions_host.worker import read_frame, write_frame

ROOT = Path(__file__).resolve().parents[2]
RUNTIME_LIB = ROOT / ".runtime" / "lib"
MAX_MESSAGE_LENGTH = 2_147_483_647

if str(RUNTIME_LIB) not in sys.path:
    sys.path.append(str(RUNTIME_LIB))


class RuntimeMissing(RuntimeError):
    """Raised when the runtime library is not installed (make install-runtime does it)."""


def protos() -> Any:
    """The host's FunctionRpc message classes (installed beside the runtime library)."""
    try:
        import functionrpc_protos
        from functionrpc_protos import FunctionRpc_pb2
    except ImportError as exc:
        raise RuntimeMissing(
            f"{RUNTIME_LIB} is missing: run `make install-runtime` "
            "(python -m devtools.install_functions_runtime .runtime)"
        ) from exc
    functionrpc_protos.FunctionRpc_pb2 = FunctionRpc_pb2
    return functionrpc_protos


@dataclass(frozen=True)
class SettlementCall:
    """One call the worker made to the host's Settlement service."""

    method: str
    lock_token: str
    reason: str | None = None
    description: str | None = None


@dataclass
class SettlementRecorder(settlement_pb2_grpc.SettlementServicer):  # type: ignore[misc]
    """The host's Settlement service: records each call and answers success."""

    calls: list[SettlementCall] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: seconds each complete, abandon and dead-letter takes to answer (a slow round trip)
    delay: float = 0.0
    #: settlements being answered at this moment, and the most there ever were at once
    in_flight: int = 0
    most_in_flight: int = 0

    def _record(self, method: str, request: Any, **extra: str | None) -> Empty:
        settling = method in {"complete", "abandon", "deadletter"}
        if settling and self.delay:
            with self.lock:
                self.in_flight += 1
                self.most_in_flight = max(self.most_in_flight, self.in_flight)
            time.sleep(self.delay)
            with self.lock:
                self.in_flight -= 1
        with self.lock:
            self.calls.append(SettlementCall(method, request.locktoken, **extra))
        return Empty()

    def Complete(self, request: Any, context: Any) -> Empty:
        return self._record("complete", request)

    def Abandon(self, request: Any, context: Any) -> Empty:
        return self._record("abandon", request)

    def Defer(self, request: Any, context: Any) -> Empty:
        return self._record("defer", request)

    def RenewMessageLock(self, request: Any, context: Any) -> Empty:
        return self._record("renew", request)

    def Deadletter(self, request: Any, context: Any) -> Empty:
        return self._record(
            "deadletter",
            request,
            reason=request.deadletterReason.value if request.HasField("deadletterReason") else None,
            description=request.deadletterErrorDescription.value
            if request.HasField("deadletterErrorDescription")
            else None,
        )

    def taken(self) -> list[SettlementCall]:
        """Every call so far, and forget them."""
        with self.lock:
            calls, self.calls = self.calls, []
        return calls


@dataclass(frozen=True)
class Invocation:
    """What the worker answered to one InvocationRequest."""

    succeeded: bool
    exception: str
    response: Any


class FunctionsHost:
    """Start with ``with FunctionsHost(env) as host:``; see the module docstring."""

    def __init__(self, env: dict[str, str], log_path: Path, app_dir: Path = ROOT) -> None:
        self.protos = protos()
        self.env = env
        self.app_dir = app_dir
        self.log_path = log_path
        self.settlement = SettlementRecorder()
        self.functions: dict[str, Any] = {}  # name -> RpcFunctionMetadata
        self.init_response: Any = None
        self._lock = threading.Lock()

    def __enter__(self) -> FunctionsHost:
        # as many threads as the app has settlements in flight (AUDIT_SETTLE_CONCURRENCY, up to 32)
        self._server = grpc.server(futures.ThreadPoolExecutor(32))
        settlement_pb2_grpc.add_SettlementServicer_to_server(self.settlement, self._server)
        port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()
        env = {**os.environ, **self.env, "PYTHONPATH": str(ROOT)}
        self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.functions_host.worker",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--functions-grpc-max-message-length",
                str(MAX_MESSAGE_LENGTH),
                "--app-dir",
                str(self.app_dir),
                "--runtime-lib",
                str(RUNTIME_LIB),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=env,
            cwd=ROOT,
        )
        p = self.protos
        self.init_response = self.request(
            worker_init_request=p.WorkerInitRequest(
                host_version="4.1040.0",
                function_app_directory=str(self.app_dir),
                worker_directory=str(self.app_dir),
            )
        ).worker_init_response
        return self

    def index(self) -> dict[str, Any]:
        """FunctionsMetadata, then FunctionLoad for each function, as the host does."""
        p = self.protos
        answer = self.request(
            functions_metadata_request=p.FunctionsMetadataRequest(
                function_app_directory=str(self.app_dir)
            )
        ).function_metadata_response
        if answer.result.status != p.StatusResult.Success:
            raise AssertionError(answer.result.exception.message)
        for metadata in answer.function_metadata_results:
            self.functions[metadata.name] = metadata
            loaded = self.request(
                function_load_request=p.FunctionLoadRequest(
                    function_id=metadata.function_id, metadata=metadata
                )
            ).function_load_response
            assert loaded.result.status == p.StatusResult.Success, loaded.result
        return self.functions

    def __exit__(self, *exc: object) -> None:
        if self._process.stdin:
            self._process.stdin.close()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._server.stop(grace=None)
        self._log.close()

    def request(self, **content: Any) -> Any:
        """Send one StreamingMessage to the worker and return its answer."""
        message = self.protos.StreamingMessage(request_id=uuid.uuid4().hex, **content)
        assert self._process.stdin
        assert self._process.stdout
        with self._lock:
            write_frame(self._process.stdin, message.SerializeToString())
            frame = read_frame(self._process.stdout)
        if frame is None:
            raise AssertionError(
                f"the worker exited ({self._process.poll()}); see {self.log_path}:\n"
                + self.log_path.read_text(errors="replace")[-3000:]
            )
        return self.protos.StreamingMessage.FromString(frame)

    def invoke(
        self, name: str, inputs: Iterable[Any], trigger_metadata: dict[str, Any]
    ) -> Invocation:
        p = self.protos
        answer = self.request(
            invocation_request=p.InvocationRequest(
                invocation_id=str(uuid.uuid4()),
                function_id=self.functions[name].function_id,
                input_data=list(inputs),
                trigger_metadata=trigger_metadata,
            )
        ).invocation_response
        ok = answer.result.status == p.StatusResult.Success
        return Invocation(ok, answer.result.exception.message, answer)

    def service_bus_batch(self, name: str, messages: Iterable[HostMessage]) -> Invocation:
        """Invoke a Service Bus trigger with one batch, as the host builds SDK-type input."""
        rpc = self.protos.FunctionRpc_pb2
        batch = rpc.CollectionModelBindingData(
            model_binding_data=[
                rpc.ModelBindingData(
                    version="1.0",
                    source="AzureServiceBusReceivedMessage",
                    content_type="application/octet-stream",
                    content=binding_content(message),
                )
                for message in messages
            ]
        )
        binding = self.functions[name]
        (trigger,) = [
            b for b in binding.bindings if binding.bindings[b].type == "serviceBusTrigger"
        ]
        data = self.protos.TypedData(collection_model_binding_data=batch)
        return self.invoke(name, [self.protos.ParameterBinding(name=trigger, data=data)], {})

    def http(
        self,
        name: str,
        url: str,
        *,
        params: dict[str, str],
        query: dict[str, str] | None = None,
        method: str = "GET",
    ) -> tuple[int, dict[str, str], Any]:
        """Invoke an HTTP trigger; return status, headers and the body (parsed when JSON)."""
        p = self.protos
        request = p.RpcHttp(
            method=method,
            url=url,
            headers={"x-functions-key": "test"},
            params=params,
            query=query or {},
            body=p.TypedData(bytes=b""),
            rawBody=p.TypedData(bytes=b""),
        )
        binding = self.functions[name]
        (trigger,) = [b for b in binding.bindings if binding.bindings[b].type == "httpTrigger"]
        invocation = self.invoke(
            name, [p.ParameterBinding(name=trigger, data=p.TypedData(http=request))], {}
        )
        assert invocation.succeeded, invocation.exception
        answer = invocation.response.return_value.http
        body = answer.body.bytes or answer.body.string.encode()
        headers = dict(answer.headers)
        kind = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
        if body and "json" not in kind and kind:
            return int(answer.status_code), headers, body.decode()
        return int(answer.status_code), headers, json.loads(body) if body else None

    def raw_bindings(self, name: str) -> list[dict[str, Any]]:
        """The binding JSON the host reads for one function."""
        return [json.loads(raw) for raw in self.functions[name].raw_bindings]

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")
