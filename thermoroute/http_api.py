"""The plan's HTTP API (``thermoroute serve``): what a load balancer fetches.

FastAPI on uvicorn, in the service's process on the coordinator's node. Chosen over Ray
Serve because the API must outlive what it reports on: a plain ASGI server in the serving
process keeps answering — with the last plan, marked stale or degraded — while site agents
crash and Ray restarts them, where a Ray Serve deployment would be one more actor to lose;
FastAPI derives the OpenAPI description and the JSON schemas from the typed models of
:mod:`thermoroute.plan_api` (the service builds its answers with the same models), and both
are well kept.

Endpoints: ``GET /plan`` (``?time=`` for a later step of the horizon), ``GET /status``,
``GET /healthz``, ``GET /metrics`` (Prometheus), ``GET /openapi.json``. Bound to loopback
by default; with a bearer token every endpoint but ``/healthz`` asks for it.
"""

from __future__ import annotations

import hmac
import re
import threading
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BeforeValidator

from thermoroute.plan_api import PlanResponse, StatusResponse

#: Reads ``Authorization: Bearer …`` (and names the scheme in the OpenAPI description).
BEARER = HTTPBearer(auto_error=False, description="The service's --token-file, when it has one")

#: An ISO 8601 date and time whose UTC offset's ``+`` arrived as a space: a query string
#: decodes ``+`` to a space, so ``?time=2023-01-18T12:00:00+10:00`` typed as documented
#: reads ``2023-01-18T12:00:00 10:00``. Only a space standing where the offset's sign was
#: — after the time of day, before ``HH:MM`` or ``HHMM`` ending the value — matches.
_PLUS_AS_SPACE = re.compile(
    r"(?P<when>\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?)"
    r" (?P<offset>\d{2}:?\d{2})"
)


def _plus_restored(value: object) -> object:
    """``value`` with the ``+`` of its UTC offset back where a query string's decoding put a
    space (:data:`_PLUS_AS_SPACE`); any other value as it is, for the datetime check."""
    if isinstance(value, str) and (match := _PLUS_AS_SPACE.fullmatch(value)):
        return f"{match['when']}+{match['offset']}"
    return value


def create_app(service: Any, registry: Any, token: str | None = None) -> FastAPI:
    """The API over ``service`` (:class:`thermoroute.service.PlanningService`) and the
    metrics ``registry``; ``token``: the bearer token every endpoint but ``/healthz`` asks."""
    app = FastAPI(
        title="thermoroute plan",
        version="1",
        description="The fleet's current routing plan, re-planned every step.",
        docs_url=None,  # the interactive docs load scripts from a CDN; the schema is enough
        redoc_url=None,
        openapi_url=None,  # served below, behind the token like every endpoint but /healthz
    )

    def authorised(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
    ) -> None:
        if token is None:
            return
        given = "" if credentials is None else credentials.credentials
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(
                401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"}
            )

    guard = [Depends(authorised)]

    @app.get("/healthz", response_class=PlainTextResponse)
    def healthz() -> str:
        """200 while the service runs (says nothing of the plan: see /status)."""
        return "ok\n"

    @app.get("/plan", response_model=PlanResponse, dependencies=guard)
    def plan(
        time: Annotated[
            datetime | None,
            BeforeValidator(_plus_restored),
            Query(
                description="A step of the plan's horizon (ISO-8601 with offset); a literal "
                "+ in the offset may be sent as is, as %2B, or the time given in UTC with Z"
            ),
        ] = None,
    ) -> Any:
        """Per region and class, each site's share of requests at the clock's current step
        (or at ``time``), with the plan's cycle, age and state."""
        if time is not None and time.tzinfo is None:
            raise HTTPException(422, "time needs its UTC offset (e.g. 2023-01-18T05:00+10:00)")
        answer = service.plan_at(time)
        if answer is None:
            raise HTTPException(503, "no published plan covers that time yet")
        return answer

    @app.get("/status", response_model=StatusResponse, dependencies=guard)
    def status() -> Any:
        """The cycle, the last cycles' iterations and convergence, each site's state."""
        return service.status()

    @app.get("/metrics", dependencies=guard)
    def metrics() -> Any:
        return PlainTextResponse(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/openapi.json", dependencies=guard, include_in_schema=False)
    def openapi() -> JSONResponse:
        """The API's schema (it names every endpoint and field: no less private than they)."""
        return JSONResponse(app.openapi())

    @app.exception_handler(ValueError)
    def bad_value(_: Request, error: ValueError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=422)

    return app


class ApiServer:
    """uvicorn serving ``app`` on ``host:port`` in a thread of this process."""

    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        import uvicorn

        config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="plan-api", daemon=True)

    def start(self, timeout_s: float = 10.0) -> None:
        self.thread.start()
        deadline = threading.Event()
        for _ in range(int(timeout_s / 0.05)):
            if self.server.started or not self.thread.is_alive():
                break
            deadline.wait(0.05)
        if not self.server.started:
            raise OSError("the plan API did not start (is the port free?)")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5.0)
