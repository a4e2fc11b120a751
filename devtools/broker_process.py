"""Start and stop the local Service Bus broker as a subprocess (tests and ``make run``)."""

from __future__ import annotations

import select
import subprocess
import sys
from pathlib import Path

from devtools.processes import free_port, stop_process_group

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
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline() if ready else ""
        if "listening on" not in line:
            self.stop()
            raise RuntimeError(f"the local broker did not start in {timeout} s: {line!r}")
        return self

    def stop(self) -> None:
        """Stop the broker and wait for it to exit."""
        if self.process is None:
            return
        stop_process_group(self.process)
        if self.process.stdout:
            self.process.stdout.close()
        self.process = None

    def __enter__(self) -> BrokerProcess:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
