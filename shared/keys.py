"""The trail key ring: the HMAC keys that seal entries and windows (``shared.stores.seals``
says what is sealed and how). Apart from the stores so that settings can validate keys."""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Any

ENTRY_PREFIX = b"psaudit-entry-v1\n"
SEAL_PREFIX = b"psaudit-seal-v1\n"


class TrailKeyError(ValueError):
    """Raised when a trail key is not 64 hexadecimal characters (32 bytes)."""


def key_id(key: bytes) -> str:
    """The public name of a key."""
    return hashlib.sha256(b"psaudit-key-id\n" + key).hexdigest()[:16]


def parse_key(text: str) -> bytes:
    """A key from its 64 hex characters."""
    value = text.strip()
    if len(value) != 64:
        raise TrailKeyError("a trail key is 64 hexadecimal characters (32 random bytes)")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise TrailKeyError("a trail key is 64 hexadecimal characters (32 random bytes)") from None


@dataclass(frozen=True)
class KeyRing:
    """The current trail key and the previous ones, by key id."""

    current: bytes
    previous: tuple[bytes, ...] = ()
    current_id: str = field(init=False)
    keys: dict[str, bytes] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "current_id", key_id(self.current))
        keys = {key_id(k): k for k in self.previous}
        keys[self.current_id] = self.current
        object.__setattr__(self, "keys", keys)

    @classmethod
    def from_texts(cls, current: str, previous: str = "") -> KeyRing:
        return cls(
            parse_key(current), tuple(parse_key(p) for p in previous.split(",") if p.strip())
        )

    def _entry_mac(self, key: bytes, document: str) -> str:
        mac = hmac.new(key, ENTRY_PREFIX, hashlib.sha256)
        mac.update(document.encode())
        return mac.hexdigest()

    def seal_document(self, document: str) -> str:
        """The entry seal of a stored document."""
        return f"v1:{self.current_id}:{self._entry_mac(self.current, document)}"

    def check_document(self, document: str, seal: str | None) -> tuple[str, str] | None:
        """None when ``seal`` is a valid seal of ``document``; else (kind, what is wrong),
        kind being ``unsealed``, ``unknown_key`` or ``altered``."""
        if not seal:
            return "unsealed", "no seal: written without a trail key, or its seal was removed"
        version, _, rest = seal.partition(":")
        name, _, mac = rest.partition(":")
        if version != "v1" or not mac:
            return "altered", f"seal {seal[:40]!r} is not in the v1:<key id>:<mac> form"
        key = self.keys.get(name)
        if key is None:
            return "unknown_key", f"sealed with key {name!r}, which is not in the key ring"
        expected = self._entry_mac(key, document)
        if not hmac.compare_digest(expected.encode(), mac.encode()):
            return "altered", "the stored entry does not match its seal: it was altered"
        return None

    def record_mac(self, fields: dict[str, Any], name: str | None = None) -> str | None:
        """The MAC of a window record's fields under key ``name`` (default: current)."""
        key = self.keys.get(name or self.current_id)
        if key is None:
            return None
        text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hmac.new(key, SEAL_PREFIX + text.encode(), hashlib.sha256).hexdigest()
