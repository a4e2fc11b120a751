"""Start and stop the local Service Bus broker as a subprocess (tests and ``make run``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from devtools.servicebus_broker import free_port

ROOT = Path(__file__).resolve().parent.parent


def connection_string(port: int) -> str:
    """The SDK's emulator form: plain AMQP on loopback, no TLS, any key (not checked)."""
    return (
        f"Endpoint=sb://127.0.0.1:{port};SharedAccessKeyName=RootManageSharedAccessKey;"
        "SharedAccessKey=local-broker-key-not-a-secret;UseDevelopmentEmulator=true"
    )


class BrokerProcess:
    """``python -m devtools.servicebus_broker`` on a free loopback port, stopped by PID."""

    def __init__(self, *entity_args: str, log: Path | None = None) -> None:
        self.port = free_port()
        self.args = list(entity_args)
        self.log = log
        self.process: subprocess.Popen[str] | None = None

    @property
    def connection_string(self) -> str:
        return connection_string(self.port)

    def start(self, timeout: float = 15.0) -> BrokerProcess:
        stderr = self.log.open("a") if self.log else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "devtools.servicebus_broker",
                "--port",
                str(self.port),
                *self.args,
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if "listening on" not in line or time.monotonic() > deadline:
            self.stop()
            raise RuntimeError(f"the local broker did not start: {line!r}")
        return self

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        if self.process.stdout:
            self.process.stdout.close()
        self.process = None

    def __enter__(self) -> BrokerProcess:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
