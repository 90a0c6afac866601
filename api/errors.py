"""The error envelope: every non-2xx response is {"error": {"code", "message", "request_id"}}.

Typed errors (engine.errors.KisrayError) carry their code and HTTP status; this module maps them,
FastAPI's request validation and anything unexpected, once, at the edge. Errors raised inside a Ray
actor arrive wrapped in RayTaskError and are unwrapped here. A lost database connection that
reaches the edge untyped (asyncpg/OS errors from a pool) is DB_CONNECTION_ERROR, 503; it and
every 500 leave their stack trace in the log under the request id the client got. UDF routes
also get the datafeed's own `{"s": "error", "errmsg": ...}` fields so TradingView's adapter
reports the message.
"""

from __future__ import annotations

import functools
import logging
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray.exceptions import RayTaskError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import HTTPConnection

from engine.errors import DatabaseUnavailableError, KisrayError
from engine.logs import current_request_id
from engine.storage.pool import CONNECTION_ERRORS

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID_KEY = "kisray.request_id"  # where api.middleware keeps the id in the ASGI scope
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


def new_request_id(request: HTTPConnection) -> str:
    """The client's X-Request-ID if it sent one (trimmed to 128 characters), else a new uuid4."""
    given = request.headers.get(REQUEST_ID_HEADER, "").strip()
    return given[:128] if given else uuid.uuid4().hex


def request_id(request: Request) -> str:
    """The id api.middleware gave this request (the same for the envelope, header and log)."""
    return request.scope.get(REQUEST_ID_KEY) or new_request_id(request)


@functools.cache
def in_serve_replica() -> bool:
    """True inside a Ray Serve replica, whose proxy sets and echoes X-Request-ID itself."""
    try:
        from ray import serve

        serve.get_replica_context()
    except Exception:
        return False
    return True


def error_response(
    request: Request, status: int, code: str, message: str, rid: str | None = None
) -> JSONResponse:
    rid = rid or request_id(request)
    body: dict = {"error": {"code": code, "message": message, "request_id": rid}}
    if request.url.path.startswith(UDF_PREFIX):
        body.update(s="error", errmsg=message)
    # Serve's proxy echoes X-Request-ID on every response; outside Serve it is set here.
    headers = None if in_serve_replica() else {REQUEST_ID_HEADER: rid}
    return JSONResponse(body, status_code=status, headers=headers)


async def _kisray_error(request: Request, exc: Exception) -> JSONResponse:
    cause = exc.cause if isinstance(exc, RayTaskError) else exc
    if isinstance(cause, CONNECTION_ERRORS):
        cause = DatabaseUnavailableError(f"database unreachable ({type(cause).__name__})")
    if not isinstance(cause, KisrayError):
        return await _unexpected(request, exc)
    rid = request_id(request)
    if isinstance(cause, DatabaseUnavailableError):
        # Operators need the trace to tell a refused connection from an exhausted pool.
        current_request_id.set(rid)  # the log line carries it (engine.logs.RequestIdFilter)
        logger.warning(
            "%s %s: database unavailable",
            request.method,
            request.url.path,
            exc_info=exc,
        )
    return error_response(request, cause.http_status, cause.code, cause.message, rid)


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
    route = getattr(request.scope.get("route"), "path", request.url.path)
    # The stack trace goes to the log under the same request id the client sees.
    current_request_id.set(rid)  # the log line carries it (engine.logs.RequestIdFilter)
    logger.error(
        "%s %s (route %s) failed",
        request.method,
        request.url.path,
        route,
        exc_info=exc,
    )
    return response


ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "request_id"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "request_id": {"type": "string"},
            },
        }
    },
}
# What any route may answer besides its success; 503 is the database or upstream being away.
_DOCUMENTED = {
    "400": "Invalid symbol, interval, range or request",
    "401": "Missing or wrong API token (when KISRAY_API_TOKEN is set)",
    "404": "No data for the request",
    "413": "Request body over KISRAY_MAX_REQUEST_BYTES",
    "414": "URI_TOO_LONG: request target (path and query) over 8 KiB",
    "431": "HEADERS_TOO_LARGE: request headers over 32 KiB in total",
    "422": "Malformed request",
    "500": "Internal error; the log holds the trace under request_id",
    "503": "DB_CONNECTION_ERROR or UPSTREAM_UNAVAILABLE",
}


def _document_errors(app: FastAPI) -> None:
    """Add the envelope to every operation of the OpenAPI document (FastAPI's 422 included)."""
    plain = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = plain()
        schema.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
        content = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                for status, description in _DOCUMENTED.items():
                    responses[status] = {"description": description, "content": content}
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def install_error_handlers(app: FastAPI) -> None:
    """Register the envelope handlers; call before `@serve.ingress(app)` pickles the app."""
    _document_errors(app)
    app.add_exception_handler(KisrayError, _kisray_error)
    app.add_exception_handler(RayTaskError, _kisray_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
