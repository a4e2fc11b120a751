"""A realistic corpus made from the samples: varied GUIDs and values, the real mix of Create,
Update, JSON and XML, other tables and messages, and a few malformed bodies."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from pathlib import Path

from shared.events.envelope import InboundMessage, from_files, properties_path_for

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
# (sample, weight): mostly audited Creates and Updates, as a dialog-heavy org would post.
MIX = (
    ("json-create-bankaccount", 34),
    ("json-update-bankaccount", 34),
    ("json-create-account", 8),
    ("json-update-no-regarding", 6),
    ("json-delete", 4),
    ("json-other-entity", 4),
    ("xml-create-bankaccount", 9),
    ("malformed-truncated", 1),
)
# GUIDs in the samples that make an event distinct; each message gets fresh ones.
VARIED = (
    "PrimaryEntityId",
    "OperationId",
    "CorrelationId",
    "RequestId",
)


def _templates() -> list[tuple[InboundMessage, list[bytes]]]:
    templates = []
    for name, _ in MIX:
        body_path = SAMPLES / f"{name}.body"
        message = from_files(body_path, properties_path_for(body_path))
        guids = _guids(message.body)
        templates.append((message, guids))
    return templates


def _guids(body: bytes) -> list[bytes]:
    """Distinct GUIDs in a body, to be replaced (session, operation, regarding, users...)."""
    import re

    found = re.findall(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", body)
    organization = b"7a2c31f5-8b1e-ef11-9f89-000d3a5c2b71"
    return [g for g in dict.fromkeys(found) if g != organization]


def messages(count: int, seed: int = 20261127) -> Iterator[InboundMessage]:
    """``count`` messages, generated lazily (memory stays flat however many are asked for)."""
    rng = random.Random(seed)
    templates = _templates()
    weights = [w for _, w in MIX]
    for n in range(count):
        template, guids = rng.choices(templates, weights)[0]
        body = template.body
        for guid in guids:
            body = body.replace(guid, str(uuid.UUID(int=rng.getrandbits(128))).encode())
        yield InboundMessage(
            body=body,
            content_type=template.content_type,
            message_id=f"{n:032x}",
            correlation_id=template.correlation_id,
            application_properties=template.application_properties,
            delivery_count=0,
            sequence_number=n + 1,
        )
