"""judge(): the sample_bankaccount rule (samples/README.md, rules 4-10, in that order).

Only the top-level context decides; ``ParentContext`` belongs to the calling pipeline and may
be another message on another table (reference §3.7).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from shared.dataverse.model import (
    Entity,
    EntityReference,
    RemoteExecutionContext,
    ascii_lower,
)
from shared.errors import MalformedMessage
from shared.verdicts import Reason, Verdict

PROCESSSESSION = "processsession"
BANK_ACCOUNT = "sample_bankaccount"
REGARDING = "regardingobjectid"
AUDITED_MESSAGES = frozenset({"create", "update"})
#: a session's deletion, recorded when the operator registers the Delete step with a
#: pre-image (``psaudit register --delete-step``): its regarding comes from that image
DELETE = "delete"


class RegardingSource(StrEnum):
    """Where the effective regarding record was found."""

    TARGET = "target"
    POST_IMAGE = "post_image"
    PRE_IMAGE = "pre_image"
    #: read from the session's row through the Web API (AUDIT_RESOLVE_REGARDING, backfill)
    WEB_API = "web_api"


@dataclass(frozen=True, slots=True)
class Regarding:
    """The effective regarding value (None = explicitly cleared) and where it came from."""

    value: EntityReference | None
    source: RegardingSource
    image_alias: str | None = None


@dataclass(frozen=True, slots=True)
class Judgement:
    """The verdict on one context, with its reason and the regarding it was based on."""

    verdict: Verdict
    reason: Reason | None = None
    regarding: Regarding | None = None


def effective_regarding(context: RemoteExecutionContext) -> Regarding | None:
    """Target first (even when null), then the first post image, then the first pre image."""
    target = context.target
    if target is not None and REGARDING in target.attributes:
        value = _as_reference(target.attributes[REGARDING], "InputParameters['Target']")
        return Regarding(value, RegardingSource.TARGET)
    for source, images, member in (
        (RegardingSource.POST_IMAGE, context.post_entity_images, "PostEntityImages"),
        (RegardingSource.PRE_IMAGE, context.pre_entity_images, "PreEntityImages"),
    ):
        image = first_image_holding(images, REGARDING)
        if image is not None:
            alias = next(a for a, i in images.items() if i is image)
            value = _as_reference(image.attributes[REGARDING], f"{member}[{alias!r}]")
            return Regarding(value, source, alias)
    return None


def _as_reference(value: object, where: str) -> EntityReference | None:
    if value is None or isinstance(value, EntityReference):
        return value
    raise MalformedMessage(
        Reason.SCHEMA_VIOLATION,
        f"{where}.Attributes['{REGARDING}'] is a {type(value).__name__}, not a lookup "
        "(EntityReference) or null",
    )


def judge(context: RemoteExecutionContext, context_was_trimmed: bool = False) -> Judgement:
    """Apply the verdict rules in order; the first that matches decides."""
    if ascii_lower(context.primary_entity_name) != PROCESSSESSION:
        return Judgement(Verdict.IGNORED, Reason.NOT_PROCESSSESSION)
    message = ascii_lower(context.message_name)
    if message == DELETE:
        return _judge_delete(context, context_was_trimmed)
    if message not in AUDITED_MESSAGES:
        return Judgement(Verdict.IGNORED, Reason.MESSAGE_OUT_OF_SCOPE)
    target = context.input_parameters.get("Target")
    if target is not None and not isinstance(target, Entity):
        raise MalformedMessage(
            Reason.SCHEMA_VIOLATION,
            f"InputParameters['Target'] of a {context.message_name} is a "
            f"{type(target).__name__}, not an Entity",
        )
    regarding = effective_regarding(context)
    if context_was_trimmed and not context.input_parameters:
        return Judgement(Verdict.REJECTED, Reason.CONTEXT_TRUNCATED, regarding)
    if regarding is None:
        return Judgement(Verdict.REJECTED, Reason.REGARDING_NOT_IN_MESSAGE)
    if regarding.value is None:
        reason = (
            Reason.REGARDING_CLEARED
            if regarding.source is RegardingSource.TARGET
            else Reason.REGARDING_NOT_IN_MESSAGE
        )
        return Judgement(Verdict.REJECTED, reason, regarding)
    return judge_reference(regarding)


def judge_reference(regarding: Regarding) -> Judgement:
    """Rules 9 and 10 on a regarding that is known: a sample_bankaccount is accepted, any
    other table rejected. For a regarding read through the Web API (``WEB_API``), an empty one
    is rejected as ``regarding_empty``."""
    if regarding.value is None:
        return Judgement(Verdict.REJECTED, Reason.REGARDING_EMPTY, regarding)
    if ascii_lower(regarding.value.logical_name) != BANK_ACCOUNT:
        return Judgement(Verdict.REJECTED, Reason.REGARDING_NOT_BANKACCOUNT, regarding)
    return Judgement(Verdict.ACCEPTED, None, regarding)


def first_image_holding(images: dict[str, Entity], column: str) -> Entity | None:
    """The first image (in message order, whatever its alias) that holds ``column``."""
    for image in images.values():
        if column in image.attributes:
            return image
    return None


def _judge_delete(context: RemoteExecutionContext, context_was_trimmed: bool) -> Judgement:
    """A session's Delete: its Target is a reference to the session; the regarding record is
    the pre-image's (a deleted row has no post-image). Without an image holding it, the
    deletion is recorded as ``regarding_not_in_message``: register the step's pre-image."""
    target = context.input_parameters.get("Target")
    if target is not None and not isinstance(target, EntityReference):
        raise MalformedMessage(
            Reason.SCHEMA_VIOLATION,
            f"InputParameters['Target'] of a Delete is a {type(target).__name__}, not an "
            "EntityReference",
        )
    image = first_image_holding(context.pre_entity_images, REGARDING)
    if image is None:
        reason = (
            Reason.CONTEXT_TRUNCATED if context_was_trimmed else Reason.REGARDING_NOT_IN_MESSAGE
        )
        return Judgement(Verdict.REJECTED, reason)
    alias = next(a for a, i in context.pre_entity_images.items() if i is image)
    value = _as_reference(image.attributes[REGARDING], f"PreEntityImages[{alias!r}]")
    regarding = Regarding(value, RegardingSource.PRE_IMAGE, alias)
    if value is None:
        return Judgement(Verdict.REJECTED, Reason.REGARDING_NOT_IN_MESSAGE, regarding)
    return judge_reference(regarding)
