"""Configuration from the environment (Azure app settings, local.settings.json, or a shell).

Settings are read when :func:`load_settings` is called by a composition root (the Functions
bootstrap or the CLI), never at import time.
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal
from uuid import UUID

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.keys import KeyRing, parse_key

#: Service Bus Standard accepts at most 256 KiB per message; anything larger is hostile.
DEFAULT_MAX_BODY_BYTES = 262_144
#: Real contexts nest about 20 levels (samples/README.md, rule 2).
DEFAULT_MAX_NESTING_DEPTH = 100


def default_trail_path() -> Path:
    """One trail wherever you stand: ``$XDG_DATA_HOME/psaudit/audit.sqlite3`` (the XDG base
    directory rule: ``~/.local/share`` when it is unset or not absolute), never a path
    relative to the current folder."""
    configured = os.environ.get("XDG_DATA_HOME", "")
    base = Path(configured) if configured and Path(configured).is_absolute() else None
    return (base or Path.home() / ".local" / "share") / "psaudit" / "audit.sqlite3"


class StoreKind(StrEnum):
    """Which audit store implementation to use."""

    SQLITE = "sqlite"
    TABLE = "table"


class Settings(BaseSettings):
    """Every setting the service reads, with its environment variable name."""

    model_config = SettingsConfigDict(
        case_sensitive=False, extra="ignore", frozen=True, populate_by_name=True
    )

    audit_store: StoreKind = Field(StoreKind.SQLITE, description="AUDIT_STORE: sqlite | table")
    audit_sqlite_path: Path = Field(
        default_factory=lambda: default_trail_path(),
        description="AUDIT_SQLITE_PATH: SQLite file of the trail (default: the user's data "
        "folder, the same wherever the command runs)",
    )
    audit_seal_container_id: str | None = Field(
        None,
        description="AUDIT_SEAL_CONTAINER_ID: the seal container's Azure resource id; verify "
        "reads its immutability policy (locked? how long?) through Azure Resource Manager",
    )
    audit_seal_retention_days: int = Field(
        2555,
        gt=0,
        description="AUDIT_SEAL_RETENTION_DAYS: the retention the seal container's policy must "
        "have at least (the template's sealRetentionDays); verify warns of a shorter one",
    )
    audit_seal_path: Path | None = Field(
        None,
        description="AUDIT_SEAL_PATH: the SQLite file of the window records, apart from the "
        "trail (default: beside it, audit.seals.sqlite3 for audit.sqlite3)",
    )
    audit_sqlite_busy_timeout: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="AUDIT_SQLITE_BUSY_TIMEOUT: seconds a write waits for another writer's "
        "lock before the store counts as unavailable",
    )
    audit_lock_renewal_seconds: float = Field(
        20.0,
        gt=0,
        le=300,
        description="AUDIT_LOCK_RENEWAL_SECONDS: while a batch is processed in Azure Functions, "
        "its message locks are renewed this often; keep it under a third of the entity's lock "
        "duration (default 1 min)",
    )
    audit_settle_concurrency: int = Field(
        16,
        ge=1,
        le=64,
        description="AUDIT_SETTLE_CONCURRENCY: in Azure Functions, how many of a batch's "
        "completes, abandons and dead-letters are in flight at once (each is a round trip to "
        "the host and Service Bus); 1 settles one after another",
    )
    audit_store_retry_seconds: float = Field(
        480.0,
        ge=0,
        le=3600,
        description="AUDIT_STORE_RETRY_SECONDS: how long a batch retries a failing store in "
        "place (backoff with jitter, locks renewed) before its messages are abandoned; keep it "
        "under the Functions timeout (host.json functionTimeout, 10 min)",
    )
    audit_store_retry_max_delay: float = Field(
        30.0,
        gt=0,
        le=600,
        description="AUDIT_STORE_RETRY_MAX_DELAY: the longest wait between two store retries",
    )
    audit_table_name: str = Field(
        "processsessionaudit",
        pattern=r"^[A-Za-z][A-Za-z0-9]{2,62}$",
        description="AUDIT_TABLE_NAME: the Azure Table holding the trail",
    )
    audit_table_endpoint: str | None = Field(
        None,
        description="AUDIT_TABLE_ENDPOINT: https://<account>.table.core.windows.net "
        "(managed identity via DefaultAzureCredential; the production default)",
    )
    audit_table_connection_string: SecretStr | None = Field(
        None,
        description="AUDIT_TABLE_CONNECTION_STRING: for Azurite / development only",
    )
    audit_table_read_timeout: float = Field(
        20.0,
        gt=0,
        le=300,
        description="AUDIT_TABLE_READ_TIMEOUT: seconds one Table Storage request may wait for "
        "an answer (connecting is bounded at 5 s); the store retry budget bounds the whole write",
    )
    audit_table_transactions: Literal["lean", "sdk"] = Field(
        "lean",
        description="AUDIT_TABLE_TRANSACTIONS: how the Table store writes its entity group "
        "transactions: lean (the batch body written and read by the service, a fifth to an eighth "
        "of the SDK's CPU) or sdk (azure-data-tables' submit_transaction, the fallback)",
    )
    audit_table_partitions: int = Field(
        16,
        ge=1,
        le=64,
        description="AUDIT_TABLE_PARTITIONS: commit partitions of a new table (entries spread "
        "by a hash of their id, each with its views, so each entry stays one transaction); "
        "recorded in the table when it is made, and a table keeps its count for good (a table "
        "made before this setting has one; `psaudit migrate-table` copies a trail to a new one)",
    )
    audit_page_chars: int = Field(
        4 * 1024 * 1024,
        ge=1024,
        le=64 * 1024 * 1024,
        description="AUDIT_PAGE_CHARS: a page of the HTTP API (and of export) stops adding "
        "entries once their JSON passes this many characters; the rest comes on the next page",
    )
    audit_trail_key: SecretStr | None = Field(
        None,
        description="AUDIT_TRAIL_KEY: 64 hex characters (32 random bytes); each entry is sealed "
        "with it when written, and windows by `psaudit seal` (in Azure a Key Vault reference). "
        "A secret, never logged",
    )
    audit_trail_previous_keys: SecretStr | None = Field(
        None,
        description="AUDIT_TRAIL_PREVIOUS_KEYS: comma-separated earlier trail keys, still "
        "accepted by `verify` after a rotation",
    )
    audit_seal_grace_minutes: float = Field(
        15.0,
        ge=0,
        le=1440,
        description="AUDIT_SEAL_GRACE_MINUTES: a window of recorded_at is sealed this long "
        "after it ends (longer than a batch may wait for the store)",
    )
    audit_seal_container: str = Field(
        "auditseals",
        pattern=r"^[a-z0-9](?:[a-z0-9-]{1,61}[a-z0-9])$",
        description="AUDIT_SEAL_CONTAINER: the blob container of the table store's window seals",
    )
    audit_seal_endpoint: str | None = Field(
        None,
        description="AUDIT_SEAL_ENDPOINT: https://<account>.blob.core.windows.net for the "
        "window seals of the table store (managed identity; the production default)",
    )
    audit_seal_connection_string: SecretStr | None = Field(
        None,
        description="AUDIT_SEAL_CONNECTION_STRING: for Azurite / development only",
    )
    allowed_organization_ids: Annotated[frozenset[UUID], NoDecode] = Field(
        frozenset(),
        description="ALLOWED_ORGANIZATION_IDS: comma-separated OrganizationIds; empty = any",
    )
    audit_redact_columns: Annotated[frozenset[str], NoDecode] = Field(
        frozenset(),
        description="AUDIT_REDACT_COLUMNS: comma-separated columns whose values are replaced "
        "by a marker in changes (e.g. comments,inputarguments)",
    )
    audit_max_body_bytes: int = Field(DEFAULT_MAX_BODY_BYTES, gt=0, le=DEFAULT_MAX_BODY_BYTES * 4)
    audit_max_nesting_depth: int = Field(DEFAULT_MAX_NESTING_DEPTH, gt=0, le=1000)
    dataverse_url: str | None = Field(
        None,
        description="DATAVERSE_URL: https://<org>.crm.dynamics.com, the environment whose Web "
        "API the resolver and the reconcile timer read (as the app's managed identity)",
    )
    dataverse_max_answer_bytes: int = Field(
        8 * 1024 * 1024,
        gt=0,
        le=256 * 1024 * 1024,
        description="DATAVERSE_MAX_ANSWER_BYTES: the largest Web API answer read; a larger one "
        "is refused (a page of 5,000 sessions is about 2 MiB)",
    )
    dataverse_max_pages: int = Field(
        10_000,
        gt=0,
        description="DATAVERSE_MAX_PAGES: the most pages one listing follows (reconcile, "
        "backfill); past it the run stops with an error",
    )
    dataverse_timer_budget_seconds: float = Field(
        300.0,
        gt=0,
        le=540,
        description="DATAVERSE_TIMER_BUDGET_SECONDS: how long the reconcile_trail timer waits "
        "out one Web API request's service-protection waits (the CLI waits 60 s); under the "
        "10-minute function timeout",
    )
    audit_library_log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "WARNING",
        description="AUDIT_LIBRARY_LOG_LEVEL: the level of the libraries' loggers (uamqp, "
        "azure, urllib3) in the Functions app; INFO exports their per-message lines",
    )
    audit_lookup_attempts: int = Field(
        5,
        ge=1,
        le=100,
        description="AUDIT_LOOKUP_ATTEMPTS: deliveries of a message whose regarding look-up the "
        "Web API refuses for a configuration reason (a wrong path, a missing privilege) before "
        "it is dead-lettered as dataverse_refused",
    )
    audit_resolve_regarding: bool = Field(
        False,
        description="AUDIT_RESOLVE_REGARDING: true = a regarding the message lacks is read "
        "from the session's row through the Web API (needs DATAVERSE_URL); false = today's "
        "`regarding_not_in_message`",
    )
    audit_reconcile_schedule: str = Field(
        "0 30 1 * * *",
        description="AUDIT_RECONCILE_SCHEDULE: NCRONTAB of the timer that reconciles the "
        "previous UTC day with Dataverse (with DATAVERSE_URL set)",
    )
    servicebus_connection_string: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("SERVICEBUS_CONNECTION_STRING", "ServiceBusConnection"),
        description="SERVICEBUS_CONNECTION_STRING (or ServiceBusConnection): worker and tools "
        "only; a secret, never logged",
    )
    servicebus_namespace: str | None = Field(
        None,
        validation_alias=AliasChoices(
            "SERVICEBUS_FULLY_QUALIFIED_NAMESPACE", "ServiceBusConnection__fullyQualifiedNamespace"
        ),
        description="SERVICEBUS_FULLY_QUALIFIED_NAMESPACE: <ns>.servicebus.windows.net, with "
        "DefaultAzureCredential (the production default)",
    )
    applicationinsights_connection_string: SecretStr | None = Field(
        None,
        description="APPLICATIONINSIGHTS_CONNECTION_STRING: metrics and logs to "
        "Application Insights; unset = nothing exported",
    )
    process_session_queue: str | None = Field(None, description="PROCESS_SESSION_QUEUE")
    process_session_topic: str | None = Field(None, description="PROCESS_SESSION_TOPIC")
    process_session_subscription: str | None = Field(
        None, description="PROCESS_SESSION_SUBSCRIPTION"
    )

    @field_validator("dataverse_url")
    @classmethod
    def _environment(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        from shared.dataverse.webapi import environment_url

        return environment_url(value)

    @field_validator("audit_trail_key", "audit_trail_previous_keys")
    @classmethod
    def _hex_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            return None  # set but empty: no key
        if value is not None:
            for key in value.get_secret_value().split(","):
                if key.strip():
                    parse_key(key)
        return value

    def key_ring(self) -> KeyRing | None:
        """The trail's key ring, or None when no AUDIT_TRAIL_KEY is set."""
        if self.audit_trail_key is None:
            return None
        previous = self.audit_trail_previous_keys
        return KeyRing.from_texts(
            self.audit_trail_key.get_secret_value(),
            previous.get_secret_value() if previous else "",
        )

    @field_validator("audit_redact_columns", mode="before")
    @classmethod
    def _split_columns(cls, value: object) -> object:
        if isinstance(value, str):
            return frozenset(part.strip().lower() for part in value.split(",") if part.strip())
        return value

    @field_validator("allowed_organization_ids", mode="before")
    @classmethod
    def _split_ids(cls, value: object) -> object:
        if isinstance(value, str):
            return frozenset(UUID(part.strip()) for part in value.split(",") if part.strip())
        return value


def connection_string_value(connection_string: str | None, key: str) -> str | None:
    """One ``Key=value`` part of an Azure connection string (keys compared case-insensitively),
    for messages that name an endpoint; callers never ask for the key itself."""
    for part in (connection_string or "").split(";"):
        name, _, value = part.partition("=")
        if name.strip().lower() == key.lower():
            return value.strip()
    return None


class SettingsError(ValueError):
    """Raised when a setting has a bad value: one line naming the variable, the value (never
    a secret's) and what is allowed."""


def variable_name(field: str) -> str:
    """The environment variable a person sets for a settings field."""
    info = Settings.model_fields.get(field)
    alias = info.validation_alias if info else None
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return field.upper()


def _secret(field: str) -> bool:
    info = Settings.model_fields.get(field)
    return info is not None and "SecretStr" in str(info.annotation)


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment (and explicit overrides, e.g. CLI options)."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "?"
            value = "(hidden)" if _secret(field) else repr(error.get("input"))
            problems.append(f"{variable_name(field)}={value}: {error['msg']}")
        raise SettingsError("invalid setting: " + "; ".join(problems)) from None
