"""The project's one Dataverse Web API client: registration, the regarding resolver, reconcile
and backfill all go through it.

A thin client on ``requests`` (already installed: azure-core uses it) and azure-identity, not
Microsoft's PowerPlatform-Dataverse-Client, which brings pandas and numpy (164 MB more in the
Functions package, 0.4 s to import; docs/design.md, "The Dataverse Web API client"). It keeps
to what Microsoft documents:

* OData headers and ``Prefer`` (``odata.maxpagesize``, ``odata.include-annotations``):
  https://learn.microsoft.com/power-apps/developer/data-platform/webapi/compose-http-requests-handle-errors
  and .../webapi/query/page-results (``@odata.nextLink`` is used exactly as given, and only on
  the environment's own origin, so that a bearer token is never sent elsewhere);
* lookup annotations (``_x_value@Microsoft.Dynamics.CRM.lookuplogicalname``,
  ``@OData.Community.Display.V1.FormattedValue``):
  https://learn.microsoft.com/power-apps/developer/data-platform/webapi/query/select-columns;
* service protection limits: HTTP 429 with ``Retry-After`` (seconds) is waited out, as are
  503 and 504 with backoff, all inside a time budget per request:
  https://learn.microsoft.com/power-apps/developer/data-platform/api-limits#retry-operations;
* errors as ``{"error": {"code", "message"}}``; a token is never part of any message.

Tokens: ``DATAVERSE_ACCESS_TOKEN`` when set (scripts, tests), else azure-identity's
``DefaultAzureCredential`` (managed identity in Azure, ``az login`` on a workstation) for the
scope ``<environment>/.default``.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

import requests

from shared.errors import ServiceError, TransientError

log = logging.getLogger(__name__)

API = "api/data/v9.2"
#: (connect, read) seconds of one HTTP request
DEFAULT_TIMEOUT = (5.0, 30.0)
#: how long one logical request may spend waiting out 429/503/504 and network failures
DEFAULT_BUDGET = 60.0
#: network failures (no answer at all) are tried this many times more, then reported
NETWORK_RETRIES = 2
#: the largest answer read (``DATAVERSE_MAX_ANSWER_BYTES``); a page of 5,000 sessions is ~2 MiB
DEFAULT_MAX_ANSWER_BYTES = 8 * 1024 * 1024
#: the most pages one run follows (``DATAVERSE_MAX_PAGES``): 5,000,000 rows at the default size
DEFAULT_MAX_PAGES = 10_000
#: the deepest JSON an answer may nest (Dataverse's are a few levels deep)
MAX_ANSWER_DEPTH = 64
#: a Retry-After below this is waited this long (a 0 would spin)
MIN_RETRY_AFTER = 1.0
#: a run of non-blank characters this long in an error text is cut out: a token in any encoding
#: (plain, JSON- or URL-escaped, base64, hex) is one long run
LONGEST_SHOWN_WORD = 40
_CHUNK = 64 * 1024
LOOKUP_LOGICAL_NAME = "Microsoft.Dynamics.CRM.lookuplogicalname"
FORMATTED_VALUE = "OData.Community.Display.V1.FormattedValue"
_RETRY_STATUSES = frozenset({429, 503, 504})
#: Dataverse's error code for "the row does not exist" (ObjectDoesNotExist):
#: https://learn.microsoft.com/power-apps/developer/data-platform/reference/web-service-error-codes
DOES_NOT_EXIST = "0x80040217"
_ERROR_CODE = re.compile(r"0x[0-9A-Fa-f]{8}")
#: in a link the Web API gives: characters parsers disagree on (or that hide a second host)
_UNSAFE_LINK = re.compile(r"[\\\x00-\x20\x7f]")
_LONG_WORD = re.compile(rf"\S{{{LONGEST_SHOWN_WORD + 1},}}")
_PRIVILEGE = re.compile(r"\bprv[A-Z][A-Za-z]{2,60}\b")


class DataverseError(ServiceError):
    """Raised when the Web API refuses a request or cannot be used: one line, never a token."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class DataverseUnavailable(DataverseError, TransientError):
    """Raised when the Web API did not answer, or kept asking to wait, within the budget."""


def mask_userinfo(url: str) -> str:
    """``url`` with any ``user:password@`` replaced by ``***@``, for messages and logs."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"***@{host}"))


def _origin(url: str) -> tuple[str, str, int]:
    """Scheme, host and port that ``requests`` connects to for ``url``: the URL as it prepares
    it (urllib3's parser), read as its adapter reads it (``urlparse``). Checking any other
    parse invites a differential (``http://OTHER\\@ENV/`` is ENV to ``urlsplit``, OTHER to
    urllib3). Every loopback name counts as one host. ValueError when it cannot be prepared."""
    prepared = requests.PreparedRequest()
    try:
        prepared.prepare_url(url, None)
    except requests.RequestException as exc:
        raise ValueError(str(exc)) from None
    parts = urlsplit(prepared.url or "")
    host = (parts.hostname or "").lower()
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise ValueError(str(exc)) from None
    return parts.scheme.lower(), "loopback" if _loopback(host) else host, port


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def environment_url(url: str) -> str:
    """The environment's base URL (``https://<org>.crm.dynamics.com``), checked: a scheme and a
    host are required, and ``http://`` only for a loopback host (a bearer token never crosses
    a network in clear). ValueError otherwise (a usage error)."""
    text = (url or "").strip()
    parts = urlsplit(text)
    if not parts.scheme or not parts.netloc:
        raise ValueError(
            f"Dataverse environment URL {mask_userinfo(text)!r} needs a scheme and a host, "
            "e.g. https://contoso.crm.dynamics.com"
        )
    scheme = parts.scheme.lower()
    if scheme not in {"https", "http"}:
        raise ValueError(f"Dataverse environment URL must be https://, not {scheme}://")
    if scheme == "http" and not _loopback(parts.hostname or ""):
        raise ValueError(
            f"Dataverse environment URL {mask_userinfo(text)!r} is http:// on a host that is "
            "not this machine: the bearer token would cross the network in clear; use https://"
        )
    if parts.query or parts.fragment:
        raise ValueError("Dataverse environment URL takes no query or fragment")
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


class TokenSource:
    """Bearer tokens for one environment: ``DATAVERSE_ACCESS_TOKEN`` if set, else
    DefaultAzureCredential (imported only then), kept until five minutes before it expires."""

    def __init__(self, environment: str, fixed: str | None = None) -> None:
        self.scope = f"{environment}/.default"
        self.fixed = fixed if fixed is not None else os.environ.get("DATAVERSE_ACCESS_TOKEN")
        self._credential: Any = None
        self._token = ""
        self._expires = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> str:
        if self.fixed:
            return self.fixed
        with self._lock:
            if time.time() < self._expires - 300:
                return self._token
            if self._credential is None:
                from azure.identity import DefaultAzureCredential

                self._credential = DefaultAzureCredential(
                    managed_identity_client_id=os.environ.get("AZURE_CLIENT_ID") or None
                )
            token = self._credential.get_token(self.scope)
            self._token, self._expires = token.token, float(token.expires_on)
            return self._token


def prefer_annotations(*names: str) -> str:
    """The ``Prefer`` value asking for these instance annotations."""
    return f'odata.include-annotations="{",".join(names)}"'


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (delta-seconds or an HTTP date), at
    least ``MIN_RETRY_AFTER``; None (the caller's own back-off) when it cannot be read."""
    if not value:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():  # "²".isdigit() is True: ASCII digits only
        return max(MIN_RETRY_AFTER, float(text[:12]))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    left = when.timestamp() - (now if now is not None else time.time())
    return max(MIN_RETRY_AFTER, left)


def _why(status: int) -> str:
    if status == 429:
        return "HTTP 429: Dataverse's service protection limit asks to slow down"
    return f"HTTP {status}: Dataverse is busy or unavailable"


#: on_wait(seconds, why): called before each wait, to show progress to a person
WaitCallback = Callable[[float, str], None]


class WebApi:
    """OData over HTTPS with a bearer token; see the module docstring."""

    def __init__(
        self,
        environment: str,
        token: Callable[[], str],
        *,
        session: requests.Session | None = None,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        budget: float = DEFAULT_BUDGET,
        on_wait: WaitCallback | None = None,
        stop: threading.Event | None = None,
        max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
        max_pages: int = DEFAULT_MAX_PAGES,
    ) -> None:
        self.environment = environment_url(environment)
        self.base = f"{self.environment}/{API}"
        #: the base for messages: a user:password@ in the URL is never printed
        self.shown = mask_userinfo(self.base)
        self._origin = _origin(self.base)
        self.token = token
        self.session = session or requests.Session()
        self.timeout = timeout
        self.budget = budget
        self.on_wait = on_wait
        self.stop = stop or threading.Event()
        self.max_answer_bytes = max_answer_bytes
        self.max_pages = max_pages
        self.requests_made = 0
        self._token_shown = ""
        self._rng = random.Random()  # noqa: S311 - jitter, not security

    def _headers(self, prefer: Sequence[str], body: bool) -> dict[str, str]:
        headers = {
            "Authorization": f"Bearer {self.token()}",
            "Accept": "application/json",
            "OData-MaxVersion": "4.0",
            "OData-Version": "4.0",
        }
        if body:
            headers["Content-Type"] = "application/json; charset=utf-8"
        if prefer:
            headers["Prefer"] = ",".join(prefer)
        return headers

    def url_of(self, path_or_url: str) -> str:
        """A path under the API base, or a link the Web API gave (a nextLink: absolute, or
        relative to the base), resolved and checked by one rule: the URL ``requests`` will
        connect to must have the environment's scheme, host and port. Anything else is refused
        before any request (DataverseError), so that the bearer token never leaves."""
        given = "://" in path_or_url or path_or_url.startswith("/")
        if given and _UNSAFE_LINK.search(path_or_url):
            raise DataverseError(
                "the Web API answered with a link holding a backslash, a space or a control "
                "character; not followed (the bearer token is sent only to the environment)"
            )
        # a given link resolves as a browser would: '//host/x' is another host, and refused
        url = urljoin(self.base + "/", path_or_url) if given else f"{self.base}/{path_or_url}"
        try:
            origin = _origin(url)
        except ValueError:
            origin = None
        if origin != self._origin:
            raise DataverseError(
                "the Web API answered with a link to another host; not followed (the bearer "
                "token is sent only to the environment)"
            )
        return url

    def _wait(self, seconds: float, why: str, deadline: float, what: str) -> None:
        if time.monotonic() + seconds > deadline:
            raise DataverseUnavailable(
                f"{what}: {why}; waiting {seconds:.0f} s more would pass the "
                f"{self.budget:.0f} s budget"
            )
        if self.on_wait is not None:
            self.on_wait(seconds, why)
        log.info("Dataverse: %s; waiting %.1f s", why, seconds)
        if self.stop.wait(seconds):
            raise DataverseUnavailable(f"{what}: given up, the process was told to stop")

    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        body: dict[str, Any] | None = None,
        prefer: Sequence[str] = (),
        secret: str | None = None,
        allow: frozenset[int] = frozenset(),
    ) -> requests.Response:
        """One call, with 429/503/504 and network failures waited out inside the budget, which
        also bounds reading the answer (a trickle is cut off) and its size
        (``max_answer_bytes``). A status in ``allow`` (e.g. 404) is returned; a redirect and
        any other 4xx/5xx raise. ``secret``: a value the body carries (a SAS key) that an
        error answer may echo: then no text of that answer is shown."""
        url = self.url_of(path_or_url)
        what = f"{method} {mask_userinfo(url.split('?', 1)[0])}"
        deadline = time.monotonic() + self.budget
        data = json.dumps(body) if body is not None else None
        ceiling, failures = 1.0, 0
        while True:
            if self.stop.is_set():
                raise DataverseUnavailable(f"{what}: given up, the process was told to stop")
            try:
                self.requests_made += 1
                response = self._send(method, url, prefer, data, deadline, what)
            except requests.RequestException as exc:
                failures += 1
                why = f"no answer ({type(exc).__name__})"
                if failures > NETWORK_RETRIES:
                    raise DataverseUnavailable(
                        f"{what} failed: {why}; check the environment URL and that this "
                        "machine can reach it"
                    ) from None
                self._wait(self._rng.uniform(ceiling / 2, ceiling), why, deadline, what)
                ceiling = min(ceiling * 2, 30.0)
                continue
            if response.status_code in _RETRY_STATUSES:
                asked = retry_after(response.headers.get("Retry-After"))
                wait = asked if asked is not None else self._rng.uniform(ceiling / 2, ceiling)
                ceiling = min(ceiling * 2, 30.0)
                self._wait(wait, _why(response.status_code), deadline, what)
                continue
            if 300 <= response.status_code < 400:
                raise DataverseError(
                    f"{what} failed: HTTP {response.status_code}, a redirect; not followed (the "
                    "bearer token is sent only to the environment; check DATAVERSE_URL)",
                    response.status_code,
                )
            if response.status_code >= 400 and response.status_code not in allow:
                raise self._error(what, response, secret, self._token_shown)
            return response

    def _send(
        self,
        method: str,
        url: str,
        prefer: Sequence[str],
        data: str | None,
        deadline: float,
        what: str,
    ) -> requests.Response:
        """One HTTP exchange, headers and body, within ``deadline`` and ``max_answer_bytes``.
        It runs in a helper thread so that an answer trickled byte by byte (each read within
        the socket timeout) still ends at the deadline, and a stop is obeyed within a second;
        the helper, abandoned, stops reading at its next chunk."""
        headers = self._headers(prefer, data is not None)
        self._token_shown = headers["Authorization"].removeprefix("Bearer ")
        prepared = self.session.prepare_request(
            requests.Request(method, url, headers=headers, data=data)
        )
        if _origin(prepared.url or "") != self._origin:  # what is sent is what was checked
            raise DataverseError(f"{what}: not sent, the request would leave the environment")
        left = deadline - time.monotonic()
        if left <= 0:
            raise DataverseUnavailable(f"{what}: no time left in the {self.budget:.0f} s budget")
        connect, read = self.timeout
        timeout = (min(connect, left), min(read, left))
        abandoned = threading.Event()
        outcome: list[requests.Response | BaseException] = []
        limit = self.max_answer_bytes

        def exchange() -> None:
            try:
                response = self.session.send(
                    prepared, stream=True, timeout=timeout, allow_redirects=False
                )
                try:
                    content = bytearray()
                    for chunk in response.iter_content(_CHUNK):
                        if abandoned.is_set():
                            return
                        content += chunk
                        if len(content) > limit:
                            raise DataverseError(
                                f"{what}: the answer is larger than {limit:,} bytes "
                                "(DATAVERSE_MAX_ANSWER_BYTES); not read further"
                            )
                    response._content = bytes(content)
                finally:
                    response.close()
                outcome.append(response)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                outcome.append(exc)

        helper = threading.Thread(target=exchange, name="dataverse-request", daemon=True)
        helper.start()
        while helper.is_alive():
            helper.join(min(1.0, max(0.0, deadline - time.monotonic())))
            if helper.is_alive() and (self.stop.is_set() or time.monotonic() >= deadline):
                abandoned.set()
                why = "told to stop" if self.stop.is_set() else "no whole answer"
                raise DataverseUnavailable(
                    f"{what}: given up, {why} within the {self.budget:.0f} s budget"
                )
        if not outcome:
            raise DataverseUnavailable(f"{what}: the answer ended early")
        if isinstance(outcome[0], BaseException):
            raise outcome[0]
        return outcome[0]

    @staticmethod
    def _error(
        what: str, response: requests.Response, secret: str | None, token: str = ""
    ) -> DataverseError:
        status = response.status_code
        try:
            error = _parse_json(response.content, what).get("error", {})
            code, message = str(error.get("code", "")), str(error.get("message", ""))
        except (DataverseError, AttributeError):
            code, message = "", ""
        found = _ERROR_CODE.fullmatch(code)
        said = f" {found.group()}" if found else ""
        if secret is not None:
            # A Web API may echo the request back, escaped in ways no search can undo (JSON \/
            # or \u002B, HTML entities, cut short): print none of its text, only the error
            # code and the privileges it names (fixed words, never the secret).
            privileges = sorted({p for p in _PRIVILEGE.findall(message) if p not in secret})
            said += f"; missing privilege {', '.join(privileges[:5])}" if privileges else ""
            return DataverseError(
                f"{what} failed: HTTP {status}{said} (the rest of the answer is not shown: "
                "the request carried a secret, which it may echo)",
                status,
            )
        hint = {
            401: " (the token was refused: check DATAVERSE_ACCESS_TOKEN or the identity's "
            "sign-in, and that its audience is this environment)",
            403: " (the identity lacks a privilege: see docs/operations.md, application user)",
        }.get(status, "")
        detail = _shown_detail(message, token)
        return DataverseError(
            f"{what} failed: HTTP {status}{said}{': ' + detail if detail else ''}{hint}", status
        )

    def get(self, path_or_url: str, *, prefer: Sequence[str] = ()) -> dict[str, Any]:
        """A GET whose answer is a JSON object."""
        response = self.request("GET", path_or_url, prefer=prefer)
        return _json_object(response, path_or_url)

    def row(
        self, entity_set: str, row_id: str, select: Sequence[str], *, prefer: Sequence[str] = ()
    ) -> dict[str, Any] | None:
        """One row by id, or None when Dataverse says that row does not exist (404 with its
        error code ``0x80040217``); an empty ``select`` asks for every column. Any other 404
        (a wrong path in DATAVERSE_URL answers "Resource not found for the segment") is a
        DataverseError: a configuration to fix, never a verdict."""
        path = f"{entity_set}({row_id})" + (f"?$select={','.join(select)}" if select else "")
        response = self.request("GET", path, prefer=prefer, allow=frozenset({404}))
        if response.status_code == 404:
            if _error_code(response) == DOES_NOT_EXIST:
                return None
            raise self._error(f"GET {entity_set}({row_id})", response, None, self._token_shown)
        return _json_object(response, path)

    def pages(
        self, path: str, *, page_size: int = 500, prefer: Sequence[str] = ()
    ) -> Iterator[list[dict[str, Any]]]:
        """Each page of a collection, following ``@odata.nextLink`` as given (the server may
        page smaller than asked), on the environment's origin only, never the same link twice,
        at most ``max_pages`` pages."""
        asked = [f"odata.maxpagesize={page_size}", *prefer]
        link: str | None = path
        followed: set[str] = set()
        while link is not None:
            if link in followed:
                raise DataverseError(
                    f"GET {path.split('?', 1)[0]}: the Web API gave a page link it gave before "
                    "(a loop); stopped"
                )
            if len(followed) >= self.max_pages:
                raise DataverseError(
                    f"GET {path.split('?', 1)[0]}: more than {self.max_pages:,} pages "
                    "(DATAVERSE_MAX_PAGES); stopped: narrow the window or raise the limit"
                )
            followed.add(link)
            answer = self.get(link, prefer=asked)
            rows = answer.get("value")
            if not isinstance(rows, list):
                raise DataverseError(f"GET {path.split('?', 1)[0]}: the answer has no value list")
            yield [row for row in rows if isinstance(row, dict)]
            next_link = answer.get("@odata.nextLink")
            link = next_link if isinstance(next_link, str) and next_link else None

    # what registration needs (shared.dataverse.registration)
    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        secret = str(body["saskey"]) if body is not None and "saskey" in body else None
        prefer = ("return=representation",) if method in {"POST", "PATCH"} else ()
        response = self.request(method, path, body=body, prefer=prefer, secret=secret)
        return _parse_json(response.content, f"{method} {path}") if response.content else None

    def find(self, entity_set: str, odata_filter: str, select: str) -> list[dict[str, Any]]:
        query = f"{entity_set}?$select={select}&$filter={quote(odata_filter, safe=' =()')}"
        return list(self.get(query).get("value", []))


def _error_code(response: requests.Response) -> str:
    """The ``error.code`` of an error answer, lower-case (``0x80040217``), or ''."""
    try:
        error = _parse_json(response.content, "error").get("error", {})
        code = str(error.get("code", "")) if isinstance(error, dict) else ""
    except (DataverseError, AttributeError):
        return ""
    found = _ERROR_CODE.fullmatch(code.strip())
    return found.group().lower() if found else ""


def _shown_detail(message: str, token: str) -> str:
    """An error answer's text as it may be shown: one line of at most 300 characters, with
    the token in its usual encodings (plain, URL-, JSON-escaped, base64, hex) and every run of
    over ``LONGEST_SHOWN_WORD`` non-blank characters (a real token, a JWT of a thousand
    characters, is one in any encoding) replaced by ``[…]``."""
    text = " ".join(message.split())
    if token:
        raw = token.encode()
        for form in sorted(
            {
                token,
                quote(token, safe=""),
                json.dumps(token)[1:-1],
                json.dumps(token)[1:-1].replace("/", "\\/"),
                base64.b64encode(raw).decode().rstrip("="),
                base64.urlsafe_b64encode(raw).decode().rstrip("="),
                raw.hex(),
                raw.hex().upper(),
            },
            key=len,
            reverse=True,
        ):
            text = text.replace(form, "[…]")
    return _LONG_WORD.sub("[…]", text)[:300]


def _parse_json(content: bytes, what: str) -> Any:
    """An answer's JSON, its nesting checked before it is parsed (no recursion limit to
    hit); DataverseError when it is not JSON or nests deeper than ``MAX_ANSWER_DEPTH``."""
    from shared.dataverse.json_format import nesting_depth

    if nesting_depth(content, MAX_ANSWER_DEPTH) > MAX_ANSWER_DEPTH:
        raise DataverseError(f"{what}: the answer nests deeper than {MAX_ANSWER_DEPTH} levels")
    try:
        return json.loads(content)
    except (ValueError, RecursionError):
        raise DataverseError(f"{what}: the answer is not JSON") from None


def _json_object(response: requests.Response, path: str) -> dict[str, Any]:
    what = f"GET {path.split('?', 1)[0]}"
    answer = _parse_json(response.content, what)
    if not isinstance(answer, dict):
        raise DataverseError(f"{what}: the answer is not a JSON object")
    return answer


def odata_time(moment: datetime) -> str:
    """A DateTimeOffset literal for ``$filter`` (unquoted, UTC, ``Z``)."""
    utc = moment.astimezone(UTC)
    if utc.microsecond:
        return utc.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return utc.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: object) -> datetime | None:
    """A Web API date-time value (ISO-8601, ``Z`` or an offset) as an aware datetime."""
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def build_web_api(
    environment: str,
    *,
    budget: float = DEFAULT_BUDGET,
    on_wait: WaitCallback | None = None,
    stop: threading.Event | None = None,
    max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
    max_pages: int = DEFAULT_MAX_PAGES,
) -> WebApi:
    """A client for the environment with the default token source."""
    base = environment_url(environment)
    return WebApi(
        base,
        TokenSource(base),
        budget=budget,
        on_wait=on_wait,
        stop=stop,
        max_answer_bytes=max_answer_bytes,
        max_pages=max_pages,
    )
