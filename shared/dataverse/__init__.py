"""The Dataverse wire model: RemoteExecutionContext, its values, and decode()."""

from shared.dataverse.decode import Limits, check_content_type, decode, media_type
from shared.dataverse.model import (
    AliasedValue,
    Entity,
    EntityCollection,
    EntityReference,
    Money,
    OpaqueValue,
    OptionSetValue,
    RemoteExecutionContext,
)

__all__ = [
    "AliasedValue",
    "Entity",
    "EntityCollection",
    "EntityReference",
    "Limits",
    "Money",
    "OpaqueValue",
    "OptionSetValue",
    "RemoteExecutionContext",
    "check_content_type",
    "decode",
    "media_type",
]
