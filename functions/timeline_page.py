"""HTTP: the timeline pages (HTML, function-level key, like the JSON read API):

    GET /api/bankaccounts/{id}/timeline?verdict=&since=&until=&limit=&continuation=
    GET /api/processsessions/{id}/timeline?...

The page's links keep the request's ``code`` (the function key), so paging and filtering
work behind the key; ``Referrer-Policy: no-referrer`` keeps it from leaving the page.
"""

from __future__ import annotations

import logging

import azure.functions as func

from functions import runtime
from shared.errors import TransientError

bp = func.Blueprint()  # type: ignore[no-untyped-call]
log = logging.getLogger(__name__)


def respond(view_name: str, req: func.HttpRequest) -> func.HttpResponse:
    """One page; 503 (as text) when the store is down."""
    from shared.trail.reading import TrailView
    from shared.web.page import CONTENT_TYPE, timeline_page

    view = TrailView(view_name)
    params = dict(req.params)
    keep = {"code": params["code"]} if params.get("code") else {}
    try:
        page = timeline_page(
            runtime.pipeline().store,
            view,
            req.route_params.get("id", ""),
            params,
            dataverse_url=runtime.settings().dataverse_url,
            keep=keep,
            names=runtime.names(),
        )
    except TransientError as exc:
        log.warning("timeline read failed: %s", exc)
        return func.HttpResponse(
            "The audit store is unavailable; retry in a moment.",
            status_code=503,
            mimetype="text/plain",
            headers={"Retry-After": "5"},
        )
    return func.HttpResponse(
        page.body, status_code=page.status, headers=page.headers | {"Content-Type": CONTENT_TYPE}
    )


@bp.function_name("bankaccount_timeline")
@bp.route(route="bankaccounts/{id}/timeline", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def bankaccount_timeline(req: func.HttpRequest) -> func.HttpResponse:
    """The timeline page of one sample_bankaccount, oldest first."""
    return respond("bankaccount", req)


@bp.function_name("processsession_timeline")
@bp.route(
    route="processsessions/{id}/timeline", methods=["GET"], auth_level=func.AuthLevel.FUNCTION
)
def processsession_timeline(req: func.HttpRequest) -> func.HttpResponse:
    """The timeline page of one dialog session, oldest first."""
    return respond("processsession", req)
