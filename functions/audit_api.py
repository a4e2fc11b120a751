"""HTTP read API over the audit trail (function-level key):

    GET /api/bankaccounts/{id}/audit?limit=100&continuation=...
    GET /api/processsessions/{id}/audit?limit=100&continuation=...

Both answer ``{"id", "entries": [...], "continuation": token | null}``, oldest first; pass
``continuation`` back to read the next page.
"""

from __future__ import annotations

import json
import logging

import azure.functions as func

from functions import runtime
from shared.errors import TransientError
from shared.trail.reading import BadRequest, NotFound, TrailView, read_trail

bp = func.Blueprint()  # type: ignore[no-untyped-call]
log = logging.getLogger(__name__)


def _json(status: int, body: object, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(body), status_code=status, mimetype="application/json", headers=headers
    )


def respond(view: TrailView, req: func.HttpRequest) -> func.HttpResponse:
    """Read one page of a trail; 400 for a bad id, limit or token, 404 when the id has no
    entry at all, 503 when the store is down."""
    try:
        store = runtime.pipeline().store
        return _json(200, read_trail(store, view, req.route_params.get("id", ""), req.params))
    except BadRequest as exc:
        return _json(400, {"error": str(exc)})
    except NotFound as exc:
        return _json(404, {"error": str(exc)})
    except TransientError as exc:
        log.warning("audit read failed: %s", exc)
        return _json(503, {"error": "the audit store is unavailable; retry"}, {"Retry-After": "5"})


@bp.function_name("bankaccount_audit")
@bp.route(route="bankaccounts/{id}/audit", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def bankaccount_audit(req: func.HttpRequest) -> func.HttpResponse:
    """The audit trail of one sample_bankaccount, oldest first."""
    return respond(TrailView.BANK_ACCOUNT, req)


@bp.function_name("processsession_audit")
@bp.route(route="processsessions/{id}/audit", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def processsession_audit(req: func.HttpRequest) -> func.HttpResponse:
    """Every audit entry of one dialog session, oldest first."""
    return respond(TrailView.PROCESS_SESSION, req)
