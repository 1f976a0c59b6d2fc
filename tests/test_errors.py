"""The error model: a BeaconError raised in a Starlette route is answered in one place, as_response's way."""

from __future__ import annotations

import asyncio

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.testclient import TestClient

from beacon import api, errors
from beacon.app import NOT_STARTED


def _client(exc: errors.BeaconError) -> TestClient:
    async def fails(request: Request) -> Response:
        raise exc

    app = Starlette(routes=[Route("/x", fails)], exception_handlers={errors.BeaconError: api.error_response})
    return TestClient(app)


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (errors.BadRequest("limit must be 1..1000"), 400),
        (errors.Forbidden("this key reads only its own partner scope"), 403),
        (errors.NotFound("not found; use stats or events"), 404),
        (errors.BodyTooLarge("body larger than 4096 bytes"), 413),
        (errors.TooManyEvents("too many events: 3 > 2"), 413),
        (errors.Unavailable("the query could not be answered now; try again"), 503),
    ],
)
def test_a_raised_error_is_answered_with_its_status_and_reason(exc, status):
    r = _client(exc).get("/x")
    assert r.status_code == status
    assert r.json() == {"error": exc.reason}


def test_unauthorized_asks_for_a_bearer_key():
    r = _client(errors.Unauthorized()).get("/x")
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.json() == {"error": "missing or wrong bearer key"}


def test_as_response_is_status_body_and_headers():
    exc = errors.MethodNotAllowed("DELETE", "GET, HEAD")
    assert errors.as_response(exc) == (405, {"error": "method DELETE not allowed; use GET"}, ((b"allow", b"GET, HEAD"),))


def test_events_before_the_buffer_is_started_are_not_durable():
    with pytest.raises(errors.NotDurable):
        asyncio.run(NOT_STARTED.append([b"{}"]))
