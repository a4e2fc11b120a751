"""Audit stores: the AuditStore protocol and its implementations, chosen by settings."""

from __future__ import annotations

from shared.keys import KeyRing
from shared.settings import Settings, StoreKind
from shared.stores.base import AuditStore, Page, all_pages
from shared.stores.seals import SealRecord, SealStore


def build_store(settings: Settings, read_only: bool = False) -> AuditStore:
    """The store the settings select; its SDK is imported only when it is selected.
    ``read_only`` (the CLI's readers) never creates or changes anything."""
    if settings.audit_store is StoreKind.SQLITE:
        from shared.stores.sqlite import SqliteAuditStore

        return SqliteAuditStore(
            settings.audit_sqlite_path,
            busy_timeout=settings.audit_sqlite_busy_timeout,
            read_only=read_only,
            ring=settings.key_ring(),
            page_chars=settings.audit_page_chars,
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
        )
    raise ValueError(f"unknown AUDIT_STORE {settings.audit_store!r}")  # pragma: no cover


def build_seal_store(settings: Settings, store: AuditStore) -> SealStore:
    """Where the window seals of ``store`` live: its own SQLite file, or Blob Storage for the
    table store (apart from the entries; WORM in Azure)."""
    from shared.stores.sqlite import SqliteAuditStore, SqliteSealStore

    if isinstance(store, SqliteAuditStore):
        return SqliteSealStore(store)
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


def seal_trail(settings: Settings, *, everything: bool = False) -> SealRecord | None:
    """Seal the windows of the configured trail that closed (``everything``: all recorded so
    far); None when nothing was due. ValueError without AUDIT_TRAIL_KEY."""
    from datetime import UTC, datetime, timedelta

    from shared.stores.seals import seal_windows

    ring = require_key_ring(settings)
    store = build_store(settings)
    try:
        return seal_windows(
            store,
            build_seal_store(settings, store),
            ring,
            datetime.now(UTC),
            grace=timedelta(minutes=settings.audit_seal_grace_minutes),
            everything=everything,
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
    "require_key_ring",
    "seal_trail",
]
