"""Register this service in Dataverse through the Web API: what the Plug-in Registration Tool
would do, as code, idempotently.

It creates or updates (reference §6):

* a ``serviceendpoint`` on the Service Bus queue or topic: contract Queue (2) or Topic (5),
  message format JSON (2), user claim UserId (2), SAS key auth (2) with the send-only rule.
  The service reads .NET Binary and XML too; JSON is chosen because it is the smallest on the
  wire and readable by a person in the DLQ;
* two asynchronous post-operation ``sdkmessageprocessingstep`` rows on ``processsession``,
  for Create and Update, with the endpoint as their event handler;
* on the Update step, a ``PostImage`` holding ``regardingobjectid`` and ``name`` (an Update's
  Target lacks the regarding) and a ``PreImage`` holding the columns whose old values the
  audit records;
* with ``delete_step``, a third step for Delete, with a ``PreImage`` holding
  ``regardingobjectid`` and ``name``: the session's deletion is then recorded (judged by the
  pre-image's regarding, shown as a deletion).

A second run changes nothing: each row is looked up by name and patched only where it
differs. ``dry_run`` reads but never writes, and returns the requests it would send. The SAS
key is never printed or logged.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar

from shared.dataverse.webapi import API, DataverseError, WebApi, mask_userinfo

log = logging.getLogger(__name__)

STEP_NAME = "ProcessSessionAudit: {message} of processsession"
POST_IMAGE_COLUMNS = "regardingobjectid,name"
#: what a Delete step's pre-image holds: the regarding the deletion is judged by, and the name
DELETE_IMAGE_COLUMNS = "regardingobjectid,name"
DEFAULT_OLD_VALUE_COLUMNS = "statecode,statuscode,processstagename,stepname,comments"
CONTRACT = {"queue": 2, "topic": 5}
MESSAGE_FORMAT_JSON = 2
USER_CLAIM_USER_ID = 2
AUTH_SAS_KEY = 2
CONNECTION_NORMAL = 1
NAMESPACE_ADDRESS = 2
STAGE_POST_OPERATION = 40
MODE_ASYNCHRONOUS = 1
IMAGE_PRE, IMAGE_POST = 0, 1
REDACTED = "***"


#: Registration's errors are the Web API client's: one line, never a token or the SAS key.
RegistrationError = DataverseError


@dataclass(frozen=True)
class Registration:
    """What to register."""

    namespace: str  # e.g. contoso-audit (or contoso-audit.servicebus.windows.net)
    entity: str  # queue or topic name
    sas_key_name: str
    sas_key: str = field(repr=False)
    kind: str = "queue"  # or "topic"
    endpoint_name: str = "ProcessSessionAudit"
    old_value_columns: str = DEFAULT_OLD_VALUE_COLUMNS
    #: also register the Delete step (and its pre-image), so that deletions are recorded
    delete_step: bool = False

    @property
    def namespace_name(self) -> str:
        return self.namespace.split(".", 1)[0]

    @property
    def namespace_address(self) -> str:
        host = (
            self.namespace if "." in self.namespace else f"{self.namespace}.servicebus.windows.net"
        )
        return f"sb://{host}/"


@dataclass
class Request:
    """One Web API call, as made or as it would be made (``dry_run``)."""

    method: str
    url: str
    body: dict[str, Any] | None = None

    def show(self) -> str:
        body = dict(self.body or {})
        if "saskey" in body:
            body["saskey"] = REDACTED
        return f"{self.method} {self.url}" + (
            f"\n  {json.dumps(body, sort_keys=True)}" if self.body is not None else ""
        )


@dataclass
class Report:
    """What a registration did (or would do)."""

    writes: list[Request] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


class PlanApi:
    """Stands in for the Web API when nothing may be read: nothing exists yet, and the SDK
    messages and filters Dataverse always has are named by placeholders. ``register --plan``
    uses it to show every write a first registration makes, with no network or credentials."""

    _ALWAYS_THERE: ClassVar[dict[str, str]] = {
        "sdkmessages": "SDK message",
        "sdkmessagefilters": "message filter",
    }

    def __init__(self, environment_url: str) -> None:
        self.base = f"{environment_url.rstrip('/')}/{API}"
        self.shown = mask_userinfo(self.base)

    def find(self, entity_set: str, odata_filter: str, select: str) -> list[dict[str, Any]]:
        if entity_set in self._ALWAYS_THERE:
            return [{select: f"<{self._ALWAYS_THERE[entity_set]} id>"}]
        return []

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        raise RegistrationError("the plan makes no call to Dataverse")  # pragma: no cover


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class Registrar:
    """Creates or updates the endpoint, the steps and the images; see the module docstring."""

    def __init__(self, api: WebApi, dry_run: bool = False, rotate_key: bool = False) -> None:
        self.api = api
        self.dry_run = dry_run
        # The SAS key is write-only (it cannot be read back to compare), so an existing
        # endpoint gets it only when asked: a rerun stays a no-op; see docs/operations.md.
        self.rotate_key = rotate_key
        self.report = Report()

    def register(self, registration: Registration) -> Report:
        endpoint_id = self._upsert(
            "serviceendpoints",
            "serviceendpointid",
            f"name eq {_literal(registration.endpoint_name)}",
            self._endpoint_body(registration),
            label=f"service endpoint {registration.endpoint_name}",
        )
        messages = (
            ("Create", "Update", "Delete") if registration.delete_step else ("Create", "Update")
        )
        for message in messages:
            step_id = self._step(message, endpoint_id)
            if message == "Update":
                self._image(step_id, "PostImage", IMAGE_POST, POST_IMAGE_COLUMNS)
                self._image(step_id, "PreImage", IMAGE_PRE, registration.old_value_columns)
            elif message == "Delete":  # a deleted row has no post-image
                self._image(step_id, "PreImage", IMAGE_PRE, DELETE_IMAGE_COLUMNS)
        return self.report

    @staticmethod
    def _endpoint_body(r: Registration) -> dict[str, Any]:
        if r.kind not in CONTRACT:
            raise RegistrationError(f"kind must be queue or topic, not {r.kind!r}")
        return {
            "name": r.endpoint_name,
            "contract": CONTRACT[r.kind],
            "messageformat": MESSAGE_FORMAT_JSON,
            "userclaim": USER_CLAIM_USER_ID,
            "authtype": AUTH_SAS_KEY,
            "connectionmode": CONNECTION_NORMAL,
            "namespaceformat": NAMESPACE_ADDRESS,
            "namespaceaddress": r.namespace_address,
            "solutionnamespace": r.namespace_name,
            "path": r.entity,
            "saskeyname": r.sas_key_name,
            "saskey": r.sas_key,
            "description": "Dataverse processsession events for the processsession audit service",
        }

    def _step(self, message: str, endpoint_id: str) -> str:
        message_id = self._single(
            "sdkmessages", "sdkmessageid", f"name eq {_literal(message)}", f"SDK message {message}"
        )
        filter_id = self._single(
            "sdkmessagefilters",
            "sdkmessagefilterid",
            f"_sdkmessageid_value eq {message_id} and primaryobjecttypecode eq 'processsession'",
            f"message filter for {message} of processsession",
        )
        name = STEP_NAME.format(message=message)
        body = {
            "name": name,
            "stage": STAGE_POST_OPERATION,
            "mode": MODE_ASYNCHRONOUS,
            "rank": 1,
            "supporteddeployment": 0,
            "asyncautodelete": True,
            "sdkmessageid@odata.bind": f"/sdkmessages({message_id})",
            "sdkmessagefilterid@odata.bind": f"/sdkmessagefilters({filter_id})",
            "eventhandler_serviceendpoint@odata.bind": f"/serviceendpoints({endpoint_id})",
        }
        return self._upsert(
            "sdkmessageprocessingsteps",
            "sdkmessageprocessingstepid",
            f"name eq {_literal(name)}",
            body,
            label=f"step {name}",
            lookups={
                "sdkmessageid@odata.bind": "_sdkmessageid_value",
                "sdkmessagefilterid@odata.bind": "_sdkmessagefilterid_value",
                "eventhandler_serviceendpoint@odata.bind": "_eventhandler_value",
            },
        )

    def _image(self, step_id: str, alias: str, image_type: int, columns: str) -> None:
        body = {
            "name": alias,
            "entityalias": alias,
            "imagetype": image_type,
            "messagepropertyname": "Target",
            "attributes": columns,
            "sdkmessageprocessingstepid@odata.bind": f"/sdkmessageprocessingsteps({step_id})",
        }
        odata_filter = (
            f"_sdkmessageprocessingstepid_value eq {step_id} and entityalias eq {_literal(alias)}"
        )
        self._upsert(
            "sdkmessageprocessingstepimages",
            "sdkmessageprocessingstepimageid",
            odata_filter,
            body,
            label=f"{alias} image",
            lookups={"sdkmessageprocessingstepid@odata.bind": "_sdkmessageprocessingstepid_value"},
        )

    def _single(self, entity_set: str, key: str, odata_filter: str, label: str) -> str:
        rows = self.api.find(entity_set, odata_filter, key)
        if len(rows) != 1:
            raise RegistrationError(f"expected one {label}, found {len(rows)}")
        return str(rows[0][key])

    def _upsert(
        self,
        entity_set: str,
        key: str,
        odata_filter: str,
        body: dict[str, Any],
        *,
        label: str,
        lookups: dict[str, str] | None = None,
    ) -> str:
        """Create the row, or patch the fields that differ; return its id."""
        lookups = lookups or {}
        plain = [k for k in body if k not in lookups and k != "saskey"]
        select = ",".join([key, *plain, *lookups.values()])
        # under a row a dry run would create, nothing exists yet: no query (its placeholder id
        # is no GUID, which Dataverse would refuse)
        rows = [] if "<new " in odata_filter else self.api.find(entity_set, odata_filter, select)
        if not rows:
            return self._write("POST", entity_set, body, key, label)
        row = rows[0]
        changed = {k: v for k, v in body.items() if k in plain and row.get(k) != v}
        for bind, column in lookups.items():
            wanted = body[bind].rsplit("(", 1)[1].rstrip(")")
            if str(row.get(column, "")).lower() != wanted.lower():
                changed[bind] = body[bind]
        if self.rotate_key and "saskey" in body:
            changed["saskey"] = body["saskey"]  # write-only in Dataverse: sent only when asked
        if not changed:
            self.report.unchanged.append(label)
            return str(row[key])
        self._write("PATCH", f"{entity_set}({row[key]})", changed, key, label)
        return str(row[key])

    def _write(self, method: str, path: str, body: dict[str, Any], key: str, label: str) -> str:
        request = Request(method, f"{self.api.shown}/{path}", body)
        self.report.writes.append(request)
        if self.dry_run:
            log.info("dry run: would %s", request.show().splitlines()[0])
            return f"<new {label}>" if method == "POST" else path.rsplit("(", 1)[1].rstrip(")")
        result = self.api.call(method, path, body)
        if method == "POST":
            return str(result[key])
        return path.rsplit("(", 1)[1].rstrip(")")
