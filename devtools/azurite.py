"""Azurite (the Azure Storage emulator) for tests and benchmarks: a free loopback port, stopped
by PID.

Installed from npm into the repo's own node_modules by `make install` / `.ci/run`
(azurite 3.35.0, the last release that runs on Node 20).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AZURITE_TABLE = ROOT / "node_modules" / ".bin" / "azurite-table"
ACCOUNT = "devstoreaccount1"
# Azurite's documented, public development key: not a secret.
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


class AzuriteUnavailable(RuntimeError):
    """Raised when Azurite cannot be started (no Node.js, not installed, did not open)."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Azurite:
    """One azurite-table process; in memory unless a ``location`` folder is given."""

    def __init__(self, log_dir: Path, location: Path | None = None) -> None:
        if shutil.which("node") is None:
            raise AzuriteUnavailable(
                "Node.js is not installed: the Table store tests need it for Azurite"
            )
        if not AZURITE_TABLE.exists():
            raise AzuriteUnavailable(
                f"{AZURITE_TABLE} is missing: run `npm ci` (make install does)"
            )
        self.port = free_port()
        self.location = location
        self.log = log_dir / f"azurite-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
            f"TableEndpoint=http://127.0.0.1:{self.port}/{ACCOUNT};"
        )

    def start(self, timeout: float = 30.0) -> None:
        storage = ["--location", str(self.location)] if self.location else ["--inMemoryPersistence"]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    str(AZURITE_TABLE),
                    "--tableHost",
                    "127.0.0.1",
                    "--tablePort",
                    str(self.port),
                    "--disableTelemetry",
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
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        self.process = None
