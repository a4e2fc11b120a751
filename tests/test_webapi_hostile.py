"""The Web API client against a hostile or broken Dataverse: the double (tests/dataverse_double.py)
answers each GET the way such a server could, and the client must not leak its token, hang,
loop, exhaust memory, or turn a broken answer into a verdict."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from shared.dataverse.sessions import read_session
from shared.dataverse.webapi import (
    MIN_RETRY_AFTER,
    DataverseError,
    DataverseUnavailable,
    WebApi,
    retry_after,
)
from tests.dataverse_double import TOKEN, DataverseDouble

Answer = Callable[[BaseHTTPRequestHandler], None]


@pytest.fixture
def double() -> Iterator[DataverseDouble]:
    with DataverseDouble() as started:
        yield started


@pytest.fixture
def elsewhere() -> Iterator[list[str]]:
    """A second listener on loopback, another port: another host as far as a token goes. It
    records every request it receives; it must receive none."""
    received: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_: Any) -> None:
            pass

        def do_GET(self) -> None:
            received.append(f"{self.path} {self.headers.get('Authorization')}")
            self.send_response(200)
            self.send_header("Content-Length", "12")
            self.end_headers()
            self.wfile.write(b'{"value":[]}')

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    received.insert(0, str(server.server_address[1]))  # the port, first
    yield received
    server.shutdown()
    server.server_close()


def _api(double: DataverseDouble, **options: Any) -> WebApi:
    return WebApi(double.url, lambda: TOKEN, **options)


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Answer:
    def answer(handler: BaseHTTPRequestHandler) -> None:
        data = json.dumps(body).encode() if not isinstance(body, bytes) else body
        handler.send_response(status)
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    return answer


def _page(next_link: str) -> Answer:
    return _json(200, {"value": [], "@odata.nextLink": next_link})


@pytest.mark.parametrize(
    "link",
    [
        "//127.0.0.1:{other}/api/data/v9.2/processsessions?page=2",  # protocol-relative
        "http://127.0.0.1:{other}\\@127.0.0.1:{env}/api/data/v9.2/processsessions",  # backslash
        "http://127.0.0.1:{other}/api/data/v9.2/processsessions",
        "http://x@127.0.0.1:{other}/api/data/v9.2/processsessions",
        "http://127.0.0.1:{env}@127.0.0.1:{other}/api/data/v9.2/processsessions",
    ],
)
def test_a_next_link_to_another_host_sends_it_nothing(double, elsewhere, link: str) -> None:
    other, env = elsewhere[0], double.url.rsplit(":", 1)[1]
    double.hostile.append(_page(link.format(other=other, env=env)))
    with pytest.raises(DataverseError, match=r"not followed|leave the environment"):
        list(_api(double).pages("processsessions"))
    assert elsewhere[1:] == []


def test_a_next_link_on_the_environment_is_followed(double) -> None:
    double.hostile.append(_page(f"{double.url}/api/data/v9.2/processsessions?$skiptoken=x"))
    double.hostile.append(_json(200, {"value": [{"a": 1}]}))
    assert list(_api(double).pages("processsessions")) == [[], [{"a": 1}]]


def test_a_next_link_that_points_at_itself_ends_the_run(double) -> None:
    loop = f"{double.url}/api/data/v9.2/processsessions?$skiptoken=same"
    double.hostile.extend([_page(loop)] * 5)
    with pytest.raises(DataverseError, match="a loop"):
        list(_api(double).pages("processsessions"))
    assert len(double.seen) == 2  # the first page and the loop once


def test_pages_past_the_limit_end_the_run(double) -> None:
    double.hostile.extend(
        _page(f"{double.url}/api/data/v9.2/processsessions?$skiptoken={n}") for n in range(10)
    )
    with pytest.raises(DataverseError, match="more than 3 pages"):
        list(_api(double, max_pages=3).pages("processsessions"))
    assert len(double.seen) == 3


def _endless(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    chunk = b" " * 65536
    try:
        handler.wfile.write(b'b\r\n{"value": [\r\n')
        for _ in range(200_000):  # 13 GB if nobody stops reading: bounded, and stops by itself
            handler.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
    except OSError:
        pass  # the client hung up: what it must do


def test_an_endless_answer_is_refused_past_the_size_limit(double) -> None:
    double.hostile.append(_endless)
    with pytest.raises(DataverseError, match="larger than 1,048,576 bytes"):
        _api(double, max_answer_bytes=1024 * 1024).get("processsessions")


def test_an_endless_answer_under_an_address_space_limit_is_a_clean_error(double) -> None:
    """The default limit (8 MiB) in a process that may map at most 1 GiB: one line, no
    MemoryError, no traceback."""
    double.hostile.append(_endless)
    child = textwrap.dedent(
        f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
        from shared.dataverse.webapi import WebApi, DataverseError
        try:
            WebApi({double.url!r}, lambda: {TOKEN!r}).get("processsessions")
        except DataverseError as exc:
            print("refused:", exc)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", child], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "refused:" in done.stdout
    assert "larger than 8,388,608 bytes" in done.stdout
    assert "Traceback" not in done.stderr


def _trickle(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", "1000")
    handler.end_headers()
    try:
        for _ in range(60):  # 1 byte a second, each well within the socket's read timeout
            handler.wfile.write(b" ")
            handler.wfile.flush()
            time.sleep(1)
    except OSError:
        pass


def test_a_trickled_answer_ends_at_the_budget(double) -> None:
    double.hostile.append(_trickle)
    started = time.monotonic()
    with pytest.raises(DataverseUnavailable, match="within the 3 s budget"):
        _api(double, budget=3.0).get("processsessions")
    assert time.monotonic() - started < 6


def test_a_stop_ends_a_trickled_answer_within_seconds(double) -> None:
    double.hostile.append(_trickle)
    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    started = time.monotonic()
    with pytest.raises(DataverseUnavailable, match="told to stop"):
        _api(double, budget=60.0, stop=stop).get("processsessions")
    assert time.monotonic() - started < 4


@pytest.mark.parametrize(
    "echo",
    [
        "Bearer {token}",
        "token={token}",
        "{token_json}",
        "{token_b64}",
        "{token_hex}",
    ],
)
def test_a_401_that_echoes_the_token_never_shows_it(double, echo: str) -> None:
    import base64

    token = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJodHRwczovL2NvbnRvc28ifQ.c2lnbmF0dXJl"
    shown = echo.format(
        token=token,
        token_json=json.dumps(token.replace(".", "/"))[1:-1].replace("/", "\\/"),
        token_b64=base64.b64encode(token.encode()).decode(),
        token_hex=token.encode().hex(),
    )
    double.hostile.append(
        _json(401, {"error": {"code": "0x80040220", "message": f"Refused: {shown} is bad"}})
    )
    with pytest.raises(DataverseError) as raised:
        WebApi(double.url, lambda: token).get("processsessions")
    text = str(raised.value)
    assert "HTTP 401" in text
    assert "0x80040220" in text
    assert "Refused:" in text
    for piece in (token, *token.split("."), shown):
        assert piece not in text


def test_a_redirect_is_an_error_and_not_followed(double, elsewhere) -> None:
    target = f"http://127.0.0.1:{elsewhere[0]}/api/data/v9.2/processsessions"
    double.hostile.append(_json(302, {"value": []}, {"Location": target}))
    with pytest.raises(DataverseError, match="HTTP 302, a redirect; not followed"):
        _api(double).get("processsessions")
    assert elsewhere[1:] == []


def test_an_answer_nested_200000_deep_is_a_clean_error(double) -> None:
    double.hostile.append(_json(200, b'{"value": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"))
    with pytest.raises(DataverseError, match="nests deeper than 64 levels"):
        _api(double).get("processsessions")


def test_retry_after_zero_waits_at_least_a_second(double) -> None:
    double.throttle(50, retry_after=0)
    api = _api(double, budget=3.0)
    with pytest.raises(DataverseUnavailable, match="budget"):
        api.get("processsessions")
    assert api.requests_made <= 4  # at least a second between them, not a spin
    assert retry_after("0") == MIN_RETRY_AFTER


@pytest.mark.parametrize("value", ["²", "١٢", "1e3", "-5", "soon", "Sun, 99 Foo 2026"])
def test_an_unreadable_retry_after_falls_back_to_the_default_back_off(value: str) -> None:
    assert retry_after(value) is None


def test_an_unreadable_retry_after_still_succeeds(double) -> None:
    double.faults.append((429, "²"))
    assert _api(double).get("processsessions")["value"] == []


def test_a_session_row_without_the_annotation_reads_the_type_column(double) -> None:
    bank = ("sample_bankaccount", "6f9c2d4e-8a1b-4c3d-9e5f-0a1b2c3d4e5f")
    session = double.add_session(modifiedon=_t0(), regarding=bank)
    double.drop_annotations = True
    row = read_session(_api(double), session)
    assert row is not None
    assert (row.regarding_logical_name, row.regarding_id) == bank


def test_a_session_row_with_no_table_at_all_is_not_judged_now(double) -> None:
    session = double.add_session(modifiedon=_t0(), regarding=("sample_bankaccount", _GUID))
    double.drop_annotations = True
    double.type_code_column = False
    with pytest.raises(DataverseUnavailable, match="without its table"):
        read_session(_api(double), session)


def test_a_kelvin_sign_table_name_is_not_a_bank_account(double) -> None:
    from shared.events.rules import judge_reference
    from shared.trail.resolver import regarding_of
    from shared.verdicts import Verdict

    session = double.add_session(modifiedon=_t0(), regarding=("sample_ban\u212aaccount", _GUID))
    row = read_session(_api(double), session)
    assert row is not None
    assert judge_reference(regarding_of(row)).verdict is Verdict.REJECTED


def test_only_dataverses_does_not_exist_means_gone(double) -> None:
    api = _api(double)
    assert read_session(api, _GUID) is None  # 404 with 0x80040217
    wrong = WebApi(f"{double.url}/wrong/path", lambda: TOKEN)  # "Resource not found..."
    with pytest.raises(DataverseError, match="HTTP 404") as raised:
        read_session(wrong, _GUID)
    assert not isinstance(raised.value, DataverseUnavailable)


_GUID = "11111111-2222-3333-4444-555555555555"


def _t0() -> Any:
    from datetime import UTC, datetime

    return datetime(2026, 12, 1, 9, tzinfo=UTC)
