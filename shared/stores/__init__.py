"""Audit stores: the AuditStore protocol and its implementations, chosen by settings."""

from __future__ import annotations

from shared.settings import Settings, StoreKind
from shared.stores.base import AuditStore, Page, all_pages


def build_store(settings: Settings, read_only: bool = False) -> AuditStore:
    """The store the settings select; its SDK is imported only when it is selected.
    ``read_only`` (the CLI's readers) never creates or changes anything."""
    if settings.audit_store is StoreKind.SQLITE:
        from shared.stores.sqlite import SqliteAuditStore

        return SqliteAuditStore(
            settings.audit_sqlite_path,
            busy_timeout=settings.audit_sqlite_busy_timeout,
            read_only=read_only,
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
        )
    raise ValueError(f"unknown AUDIT_STORE {settings.audit_store!r}")  # pragma: no cover


__all__ = ["AuditStore", "Page", "all_pages", "build_store"]
