"""`/docs` without a network: Swagger UI's assets come from this server, and the OpenAPI
document gives "Try it out" defaults that work. The app is driven in-process (no Ray needed for
the documentation routes)."""

from __future__ import annotations

import json
import re

import pytest
from starlette.testclient import TestClient

from api.app import app


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(app)


@pytest.fixture(scope="module")
def document(client: TestClient) -> dict:
    reply = client.get("/openapi.json")
    assert reply.status_code == 200
    return reply.json()


def test_docs_page_loads_only_same_origin_assets(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    sources = re.findall(r"""(?:src|href)=['"]([^'"]+)['"]""", page.text)
    sources += re.findall(r"""url:\s*['"]([^'"]+)['"]""", page.text)
    assert any(s.endswith("swagger-ui-bundle.js") for s in sources), sources
    for source in sources:
        assert source.startswith("/"), f"{source} is not served by kisray"
        assert not source.startswith("//"), source
        assert client.get(source).status_code == 200, source
    assert "cdn" not in page.text.lower()


def test_docs_assets_need_no_token(monkeypatch: pytest.MonkeyPatch) -> None:
    from api.security import requires_token

    assert not requires_token("/static-offline-docs/swagger-ui-bundle.js")
    assert not requires_token("/docs")
    assert requires_token("/candles/005930")


@pytest.fixture(scope="module")
def served_document() -> dict:
    """The document of the app as a Serve replica has it: unpickled."""
    from ray import cloudpickle

    served = cloudpickle.loads(cloudpickle.dumps(app))
    served.openapi_schema = None
    return served.openapi()


@pytest.mark.parametrize("which", ["document", "served_document"])
def test_no_empty_examples_and_no_nullable_parameters(
    request: pytest.FixtureRequest, which: str
) -> None:
    document = request.getfixturevalue(which)
    text = json.dumps(document)
    assert '"example": {}' not in text
    for path, operations in document["paths"].items():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                assert "anyOf" not in parameter["schema"], (path, parameter["name"])
                assert parameter.get("description"), (path, parameter["name"])


def test_every_route_documents_its_success_body_with_an_example(document: dict) -> None:
    schemas = document["components"]["schemas"]
    for path, operations in document["paths"].items():
        for operation in operations.values():
            ok = operation["responses"]["200"]
            content = ok.get("content", {})
            media = content.get("application/json") or content.get("text/plain")
            assert media is not None, path
            schema = media.get("schema", {})
            schema = schema.get("items", schema)  # a list: its items carry the example
            ref = schema.get("$ref")
            if ref:
                schema = schemas[ref.rsplit("/", 1)[-1]]
            assert schema.get("example") or media.get("example"), path


def test_candles_success_response_has_the_series_schema(document: dict) -> None:
    ok = document["paths"]["/candles/{symbol}"]["get"]["responses"]["200"]
    ref = ok["content"]["application/json"]["schema"]["$ref"]
    series = document["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    assert set(series["properties"]) == {"symbol", "interval", "candles"}
    candle = series["example"]["candles"][0]
    assert {"time", "open", "high", "low", "close", "volume", "is_filled", "live"} == set(candle)
