"""Names for people, read from the Dataverse Web API: who (a user's full name), which column
(its display name), which choice (its label, where the message carried none) and which bank
account (its primary name). Presentation only: the trail keeps what Dataverse sent.

What it asks, in the shapes Microsoft documents
(https://learn.microsoft.com/power-apps/developer/data-platform/webapi/query-metadata-web-api):

* ``systemusers(<id>)?$select=fullname`` once per distinct user;
* ``EntityDefinitions(LogicalName='processsession')/Attributes?$select=LogicalName,DisplayName``
  once (display names: ``DisplayName.UserLocalizedLabel.Label``);
* ``…/Attributes/Microsoft.Dynamics.CRM.PicklistAttributeMetadata``, ``StatusAttributeMetadata``
  and ``StateAttributeMetadata`` with ``$select=LogicalName&$expand=OptionSet`` once each
  (``OptionSet.Options[].Value`` and ``.Label.UserLocalizedLabel.Label``);
* ``EntityDefinitions(LogicalName='<table>')?$select=PrimaryNameAttribute,EntitySetName`` once
  per table, then ``<EntitySetName>(<id>)?$select=<PrimaryNameAttribute>`` once per record.

Never required: the first failure (unreachable, refused, a broken answer) is reported once
through ``on_unavailable`` and no further request is made; every name is then None and the
reader shows ids and logical names. Cached for ``ttl`` seconds in long-lived processes.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # the client (and requests) load only when names are read
    from shared.dataverse.webapi import WebApi

#: the table whose columns and choices the timeline shows
SESSION_TABLE = "processsession"
_CHOICE_KINDS = ("PicklistAttributeMetadata", "StatusAttributeMetadata", "StateAttributeMetadata")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,127}")
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


class Namer(Protocol):
    """What a reader asks of names; each answer None when unknown."""

    def user(self, user_id: str | None) -> str | None: ...
    def column(self, logical_name: str) -> str | None: ...
    def choice(self, column: str, value: object) -> str | None: ...
    def record(self, table: str | None, record_id: str | None) -> str | None: ...


class NoNames:
    """Names when no Dataverse environment is set: none, and no request."""

    def user(self, user_id: str | None) -> str | None:
        return None

    def column(self, logical_name: str) -> str | None:
        return None

    def choice(self, column: str, value: object) -> str | None:
        return None

    def record(self, table: str | None, record_id: str | None) -> str | None:
        return None


def _label(value: Any) -> str | None:
    """``{"UserLocalizedLabel": {"Label": "x"}}`` (a Label or a DisplayName) as text."""
    if isinstance(value, dict):
        localized = value.get("UserLocalizedLabel")
        if isinstance(localized, dict) and isinstance(localized.get("Label"), str):
            return str(localized["Label"]) or None
        labels = value.get("LocalizedLabels")
        if isinstance(labels, list) and labels and isinstance(labels[0], dict):
            text = labels[0].get("Label")
            return text if isinstance(text, str) and text else None
    return None


class NameReader:
    """Names through one Web API client, cached (see the module docstring)."""

    def __init__(
        self,
        api: WebApi,
        *,
        ttl: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
        on_unavailable: Callable[[str], None] | None = None,
    ) -> None:
        self.api = api
        self.ttl = ttl
        self.clock = clock
        self.on_unavailable = on_unavailable
        self.unavailable: str | None = None
        self._failed_at = 0.0
        self._cache: dict[tuple[str, ...], tuple[float, Any]] = {}

    def _cached(self, key: tuple[str, ...], read: Callable[[], Any]) -> Any:
        held = self._cache.get(key)
        if held is not None and self.clock() - held[0] < self.ttl:
            return held[1]
        if self.unavailable is not None and self.clock() - self._failed_at < self.ttl:
            return None  # no request after a failure, until the TTL has passed
        try:
            value = read()
        except Exception as exc:  # noqa: BLE001 - names are never required: any failure
            # (Dataverse's, the network's, the credential's) leaves ids and logical names
            first = self.unavailable is None
            self.unavailable = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            self._failed_at = self.clock()
            if first and self.on_unavailable is not None:  # said once
                self.on_unavailable(self.unavailable)
            return None
        self._cache[key] = (self.clock(), value)
        return value

    def user(self, user_id: str | None) -> str | None:
        if not user_id or not _GUID.fullmatch(user_id) or set(user_id) <= {"0", "-"}:
            return None

        def read() -> str | None:
            row = self.api.row("systemusers", user_id, ("fullname",))
            name = row.get("fullname") if row is not None else None
            return name if isinstance(name, str) and name else None

        found = self._cached(("user", user_id.lower()), read)
        return found if isinstance(found, str) else None

    def _columns(self) -> dict[str, str]:
        def read() -> dict[str, str]:
            answer = self.api.get(
                f"EntityDefinitions(LogicalName='{SESSION_TABLE}')/Attributes"
                "?$select=LogicalName,DisplayName"
            )
            found: dict[str, str] = {}
            for item in answer.get("value") or []:
                if isinstance(item, dict) and isinstance(item.get("LogicalName"), str):
                    label = _label(item.get("DisplayName"))
                    if label:
                        found[item["LogicalName"].lower()] = label
            return found

        found = self._cached(("columns", SESSION_TABLE), read)
        return found if isinstance(found, dict) else {}

    def column(self, logical_name: str) -> str | None:
        return self._columns().get(logical_name.lower())

    def _choices(self) -> dict[tuple[str, int], str]:
        def read() -> dict[tuple[str, int], str]:
            found: dict[tuple[str, int], str] = {}
            for kind in _CHOICE_KINDS:
                answer = self.api.get(
                    f"EntityDefinitions(LogicalName='{SESSION_TABLE}')/Attributes/"
                    f"Microsoft.Dynamics.CRM.{kind}?$select=LogicalName&$expand=OptionSet"
                )
                for item in answer.get("value") or []:
                    if not isinstance(item, dict) or not isinstance(item.get("LogicalName"), str):
                        continue
                    options = (item.get("OptionSet") or {}).get("Options") or []
                    for option in options if isinstance(options, list) else []:
                        value = option.get("Value") if isinstance(option, dict) else None
                        label = _label(option.get("Label")) if isinstance(option, dict) else None
                        if isinstance(value, int) and label:
                            found[(item["LogicalName"].lower(), value)] = label
            return found

        found = self._cached(("choices", SESSION_TABLE), read)
        return found if isinstance(found, dict) else {}

    def choice(self, column: str, value: object) -> str | None:
        if not isinstance(value, int) or isinstance(value, bool):
            return None
        return self._choices().get((column.lower(), value))

    def record(self, table: str | None, record_id: str | None) -> str | None:
        if not table or not record_id or not _NAME.fullmatch(table):
            return None
        if not _GUID.fullmatch(record_id):
            return None

        def definition() -> tuple[str, str] | None:
            answer = self.api.get(
                f"EntityDefinitions(LogicalName='{table.lower()}')"
                "?$select=PrimaryNameAttribute,EntitySetName"
            )
            column, entity_set = answer.get("PrimaryNameAttribute"), answer.get("EntitySetName")
            if (
                isinstance(column, str)
                and isinstance(entity_set, str)
                and _NAME.fullmatch(column)
                and _NAME.fullmatch(entity_set)
            ):
                return column, entity_set
            return None

        found = self._cached(("table", table.lower()), definition)
        if not isinstance(found, tuple):
            return None
        column, entity_set = found

        def read() -> str | None:
            row = self.api.row(entity_set, record_id, (column,))
            name = row.get(column) if row is not None else None
            return name if isinstance(name, str) and name else None

        name = self._cached(("record", table.lower(), record_id.lower()), read)
        return name if isinstance(name, str) else None
