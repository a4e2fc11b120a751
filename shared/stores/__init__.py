"""Audit stores: the AuditStore protocol and its implementations, chosen by settings."""

from __future__ import annotations

from shared.settings import Settings, StoreKind
from shared.stores.base import AuditStore


def build_store(settings: Settings) -> AuditStore:
    """The store the settings select; its SDK is imported only when it is selected."""
    if settings.audit_store is StoreKind.SQLITE:
        from shared.stores.sqlite import SqliteAuditStore

        return SqliteAuditStore(settings.audit_sqlite_path)
    raise ValueError(f"unknown AUDIT_STORE {settings.audit_store!r}")  # pragma: no cover


__all__ = ["AuditStore", "build_store"]
