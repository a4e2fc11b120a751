"""A network partition between the service and Table Storage: every call gives up inside its
budget, and a worker told to stop (SIGTERM) stops within seconds, losing nothing.

The partition is a relay on loopback in front of Azurite that, once frozen, keeps every
connection open and answers nothing (what a dropped route or a hung load balancer looks like
to a client), so the SDK's own timeouts and the pipeline's budget are what end the wait.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.broker_process import BrokerProcess
from shared.bus.standalone import Source, send
from shared.pipeline import Pipeline, StoreRetry
from shared.verdicts import Settlement
from tests.conftest import table_store
from tests.entries import synthetic_message

ROOT = Path(__file__).resolve().parent.parent


class FreezableRelay:
    """TCP relay 127.0.0.1:<port> -> 127.0.0.1:<target>; ``frozen`` holds every byte."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.server.getsockname()[1])
        self.frozen = threading.Event()
        self.closed = threading.Event()
        self.sockets: list[socket.socket] = [self.server]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while not self.closed.is_set():
                ready, _, _ = select.select([src], [], [], 0.2)
                if not ready:
                    continue
                data = src.recv(65536)
                if not data:
                    break
                while self.frozen.is_set() and not self.closed.is_set():
                    time.sleep(0.05)  # partitioned: hold it, answer nothing
                dst.sendall(data)
        except OSError:
            pass

    def connection_string(self, azurite_connection: str) -> str:
        return azurite_connection.replace(f":{self.target}/", f":{self.port}/")

    def close(self) -> None:
        self.closed.set()
        for sock in self.sockets:
            sock.close()


@pytest.fixture
def relay(azurite) -> Iterator[FreezableRelay]:
    r = FreezableRelay(azurite.port)
    yield r
    r.close()


def test_a_write_into_a_partition_gives_up_inside_the_budget(relay, azurite):
    store = table_store(relay.connection_string(azurite.connection_string))
    try:
        relay.frozen.set()
        pipeline = Pipeline(store, retry=StoreRetry(budget=3.0, first_delay=0.2, max_delay=1.0))
        started = time.monotonic()
        outcomes = pipeline.handle([synthetic_message(1), synthetic_message(2)])
        elapsed = time.monotonic() - started
        assert {o.settlement for o in outcomes} == {Settlement.RETRY}
        assert "within the store retry budget" in (outcomes[0].description or "")
        assert elapsed < 3.0 + 5.0  # the budget, a poll interval and slack; never 20 s or more
    finally:
        relay.frozen.clear()
        store.close()


def test_without_a_budget_the_read_timeout_bounds_the_call(relay, azurite):
    store = table_store(relay.connection_string(azurite.connection_string), read_timeout=1.0)
    try:
        relay.frozen.set()
        started = time.monotonic()
        outcomes = Pipeline(store).handle([synthetic_message(1)])
        assert [o.settlement for o in outcomes] == [Settlement.RETRY]
        assert "no answer in time" in (outcomes[0].description or "")
        assert time.monotonic() - started < 15.0  # SDK default: 300 s per read
    finally:
        relay.frozen.clear()
        store.close()


def test_sigterm_during_a_hung_store_call_ends_the_worker_and_keeps_the_message(
    relay, azurite, tmp_path
):
    table = "partition" + str(os.getpid())
    with BrokerProcess("--queue", "part:lock=30:max=10", log=tmp_path / "broker.log") as broker:
        env = {
            **os.environ,
            "SERVICEBUS_CONNECTION_STRING": broker.connection_string,
            "AUDIT_STORE": "table",
            "AUDIT_TABLE_NAME": table,
            "AUDIT_TABLE_CONNECTION_STRING": relay.connection_string(azurite.connection_string),
            "AUDIT_STORE_RETRY_SECONDS": "480",
        }
        worker = subprocess.Popen(
            [sys.executable, "-m", "shared.cli", "worker", "--queue", "part"],
            cwd=ROOT,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert worker.stderr is not None
            seen = ""
            while "worker on" not in seen:  # the store is open
                ready, _, _ = select.select([worker.stderr], [], [], 30)
                assert ready, f"the worker did not start: {seen}"
                seen += worker.stderr.readline()
            threading.Thread(target=worker.stderr.read, daemon=True).start()  # drain
            relay.frozen.set()
            from azure.servicebus import ServiceBusClient

            with ServiceBusClient.from_connection_string(broker.connection_string) as client:
                send(client, Source(queue="part"), [synthetic_message(7)])
                time.sleep(4.0)  # received, and its write is hanging in the partition
                assert worker.poll() is None
                worker.send_signal(signal.SIGTERM)
                started = time.monotonic()
                worker.wait(timeout=30)
                stopped_in = time.monotonic() - started
                relay.frozen.clear()
                with Source(queue="part").receiver(client) as receiver:
                    back = receiver.receive_messages(max_message_count=5, max_wait_time=5)
                    for message in back:
                        receiver.complete_message(message)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    assert worker.returncode == 0
    assert stopped_in < 30.0
    assert len(back) == 1  # abandoned: back in the queue, neither lost nor dead-lettered
    assert (back[0].delivery_count or 0) >= 1
