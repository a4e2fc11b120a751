"""Audit stores: the AuditStore protocol and its implementations, chosen by settings."""

from __future__ import annotations

from shared.errors import StoreMissing
from shared.keys import KeyRing
from shared.settings import Settings, StoreKind
from shared.stores.base import AuditStore, Page, all_pages
from shared.stores.seals import SealRecord, SealStore


def build_store(settings: Settings, read_only: bool = False, live: bool = False) -> AuditStore:
    """The store the settings select; its SDK is imported only when it is selected.
    ``read_only`` (the CLI's readers) never creates or changes anything; ``live`` (``serve``)
    keeps seeing what writers commit while it runs."""
    if settings.audit_store is StoreKind.SQLITE:
        from shared.stores.sqlite import SqliteAuditStore

        return SqliteAuditStore(
            settings.audit_sqlite_path,
            busy_timeout=settings.audit_sqlite_busy_timeout,
            read_only=read_only,
            ring=settings.key_ring(),
            page_chars=settings.audit_page_chars,
            live=live,
        )
    if settings.audit_store is StoreKind.TABLE:
        from shared.stores.table import TableAuditStore

        secret = settings.audit_table_connection_string
        return TableAuditStore(
            settings.audit_table_name,
            connection_string=secret.get_secret_value() if secret else None,
            endpoint=settings.audit_table_endpoint,
            create=not read_only,
            read_timeout=settings.audit_table_read_timeout,
            ring=settings.key_ring(),
            page_chars=settings.audit_page_chars,
            transactions=settings.audit_table_transactions,
            partitions=settings.audit_table_partitions,
        )
    raise ValueError(f"unknown AUDIT_STORE {settings.audit_store!r}")  # pragma: no cover


def build_seal_store(settings: Settings, store: AuditStore, read_only: bool = False) -> SealStore:
    """Where the window seals of ``store`` live, apart from its entries: a SQLite file of
    their own (``AUDIT_SEAL_PATH``, by default beside the trail), or Blob Storage for the
    table store (WORM in Azure). ``read_only`` never creates anything."""
    from shared.stores.sqlite import SqliteAuditStore, SqliteSealStore, default_seal_path

    if isinstance(store, SqliteAuditStore):
        path = settings.audit_seal_path or default_seal_path(store.path)
        return SqliteSealStore(path, read_only=read_only, trail=store)
    from shared.stores.blob_seals import BlobSealStore

    secret = settings.audit_seal_connection_string
    return BlobSealStore(
        settings.audit_seal_container,
        connection_string=secret.get_secret_value() if secret else None,
        endpoint=settings.audit_seal_endpoint,
    )


def require_key_ring(settings: Settings) -> KeyRing:
    """The trail's key ring; ValueError (a usage error) naming the settings when none is set."""
    ring = settings.key_ring()
    if ring is None:
        raise ValueError(
            "sealing and verifying need the trail key: set AUDIT_TRAIL_KEY (64 hex characters; "
            "AUDIT_TRAIL_PREVIOUS_KEYS for keys before a rotation)"
        )
    return ring


def require_existing(settings: Settings) -> None:
    """For the commands that only read or seal a trail: a SQLite trail that does not exist is
    StoreMissing (exit 2), never a new empty file."""
    path = settings.audit_sqlite_path
    if settings.audit_store is StoreKind.SQLITE and not path.is_file():
        raise StoreMissing(
            f"no SQLite audit store at {path}: check AUDIT_SQLITE_PATH (or --db); "
            "`run` or the worker create it"
        )


def seal_trail(
    settings: Settings, *, everything: bool = False, adopt: bool = False
) -> SealRecord | None:
    """Seal the windows of the configured trail that closed (``everything``: all recorded so
    far); None when nothing was due. ValueError without AUDIT_TRAIL_KEY, Unadopted when the
    windows hold entries written without a key (``adopt`` seals them as adopted),
    StoreMissing when there is no trail."""
    from datetime import UTC, datetime, timedelta

    from shared.stores.seals import seal_windows

    ring = require_key_ring(settings)
    require_existing(settings)
    store = build_store(settings)
    try:
        return seal_windows(
            store,
            build_seal_store(settings, store),
            ring,
            datetime.now(UTC),
            grace=timedelta(minutes=settings.audit_seal_grace_minutes),
            everything=everything,
            adopt=adopt,
        )
    finally:
        store.close()


__all__ = [
    "AuditStore",
    "Page",
    "SealStore",
    "all_pages",
    "build_seal_store",
    "build_store",
    "require_existing",
    "require_key_ring",
    "seal_trail",
]
