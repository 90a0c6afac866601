"""The error envelope: every non-2xx response is {"error": {"code", "message", "request_id"}}.

Typed errors (engine.errors.KisrayError) carry their code and HTTP status; this module maps them,
FastAPI's request validation and anything unexpected, once, at the edge. Errors raised inside a Ray
actor arrive wrapped in RayTaskError and are unwrapped here. UDF routes also get the datafeed's
own `{"s": "error", "errmsg": ...}` fields so TradingView's adapter reports the message.
"""

from __future__ import annotations

import logging
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray.exceptions import RayTaskError
from starlette.exceptions import HTTPException as StarletteHTTPException

from engine.errors import KisrayError

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
UDF_PREFIX = "/udf/"
# Which parameter a validation failure was about decides its code (the rest: BAD_REQUEST).
_PARAMETER_CODES = {
    "symbol": "INVALID_SYMBOL",
    "interval": "INVALID_INTERVAL",
    "resolution": "INVALID_INTERVAL",
    "from": "INVALID_RANGE",
    "to": "INVALID_RANGE",
    "limit": "INVALID_RANGE",
    "countback": "INVALID_RANGE",
}
_HTTP_CODES = {401: "UNAUTHORIZED", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}


def request_id(request: Request) -> str:
    """The client's X-Request-ID if it sent one (trimmed to 128 characters), else a new uuid4."""
    given = request.headers.get(REQUEST_ID_HEADER, "").strip()
    return given[:128] if given else uuid.uuid4().hex


def error_response(
    request: Request, status: int, code: str, message: str, rid: str | None = None
) -> JSONResponse:
    rid = rid or request_id(request)
    body: dict = {"error": {"code": code, "message": message, "request_id": rid}}
    if request.url.path.startswith(UDF_PREFIX):
        body.update(s="error", errmsg=message)
    # Serve's proxy hands every request an X-Request-ID (the client's or its own) and echoes it
    # on the response; only a request without one (plain FastAPI) needs the header set here.
    echoed = REQUEST_ID_HEADER in request.headers
    return JSONResponse(
        body, status_code=status, headers=None if echoed else {REQUEST_ID_HEADER: rid}
    )


async def _kisray_error(request: Request, exc: Exception) -> JSONResponse:
    cause = exc.cause if isinstance(exc, RayTaskError) else exc
    if not isinstance(cause, KisrayError):
        return await _unexpected(request, exc)
    return error_response(request, cause.http_status, cause.code, cause.message)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    location = [str(part) for part in first.get("loc", ())]
    parameter = location[-1] if location else ""
    code = _PARAMETER_CODES.get(parameter, "BAD_REQUEST")
    message = f"{parameter or 'request'}: {first.get('msg', 'invalid')}"
    return error_response(request, 400 if code != "BAD_REQUEST" else 422, code, message)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "BAD_REQUEST")
    return error_response(request, exc.status_code, code, str(exc.detail))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    rid = request_id(request)
    response = error_response(request, 500, "INTERNAL_ERROR", f"internal error ({rid})", rid)
    # The stack trace goes to the log under the same request id the client sees.
    logger.error("request_id=%s %s %s failed", rid, request.method, request.url.path, exc_info=exc)
    return response


def install_error_handlers(app: FastAPI) -> None:
    """Register the envelope handlers; call before `@serve.ingress(app)` pickles the app."""
    app.add_exception_handler(KisrayError, _kisray_error)
    app.add_exception_handler(RayTaskError, _kisray_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
