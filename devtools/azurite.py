"""Azurite (the Azure Storage emulator) for tests and benchmarks: a free loopback port, stopped
by PID.

Installed from npm into the repo's own node_modules by `make install` / `.ci/run`
(azurite 3.35.0, the last release that runs on Node 20).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from devtools.processes import free_port, stop_process_group

ROOT = Path(__file__).resolve().parent.parent
AZURITE_TABLE = ROOT / "node_modules" / ".bin" / "azurite-table"
ACCOUNT = "devstoreaccount1"
# Azurite's documented, public development key: not a secret.
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


class AzuriteUnavailable(RuntimeError):
    """Raised when Azurite cannot be started (no Node.js, not installed, did not open)."""


class Azurite:
    """One Azurite service process (``table`` or ``blob``); in memory unless a ``location``
    folder is given."""

    def __init__(self, log_dir: Path, location: Path | None = None, service: str = "table") -> None:
        if shutil.which("node") is None:
            raise AzuriteUnavailable(
                "Node.js is not installed: the Table store tests need it for Azurite"
            )
        self.service = service
        self.binary = AZURITE_TABLE.with_name(f"azurite-{service}")
        if not self.binary.exists():
            raise AzuriteUnavailable(f"{self.binary} is missing: run `npm ci` (make install does)")
        self.port = free_port()
        self.location = location
        self.log = log_dir / f"azurite-{service}-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
            f"{self.service.capitalize()}Endpoint=http://127.0.0.1:{self.port}/{ACCOUNT};"
        )

    def start(self, timeout: float = 30.0) -> None:
        storage = ["--location", str(self.location)] if self.location else ["--inMemoryPersistence"]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    str(self.binary),
                    f"--{self.service}Host",
                    "127.0.0.1",
                    f"--{self.service}Port",
                    str(self.port),
                    "--disableTelemetry",
                    # the newest SDKs ask for API versions this Azurite (the last for Node 20)
                    # predates; the calls this project makes are the same in both
                    "--skipApiVersionCheck",
                    *storage,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AzuriteUnavailable(f"Azurite exited early: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise AzuriteUnavailable(f"Azurite did not open port {self.port} in {timeout} s")

    def wait_for_disk_save(self) -> None:
        """Azurite saves its on-disk database every 5 s (LokiJS autosave), not on SIGTERM: wait
        for one save before a stop that must keep the data (measured: a stop right after a
        write loses the table)."""
        time.sleep(6)

    def stop(self) -> None:
        """Stop the emulator (SIGTERM shutdown takes 1-3 s) and wait for it to exit."""
        if self.process is not None:
            stop_process_group(self.process)
            self.process = None
