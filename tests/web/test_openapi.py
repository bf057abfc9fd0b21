"""The OpenAPI description at /openapi.json covers every route of the app, and only those."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI
from openapi_spec_validator import OpenAPIV31SpecValidator
from starlette.responses import Response
from starlette.testclient import TestClient

from gateway.web.openapi import openapi_document, operations, served_operations
from tests.conftest import ISSUER


def described() -> set[tuple[str, str]]:
    return {(operation.method, operation.path) for operation in operations()}


def undescribed(app: FastAPI) -> list[tuple[str, str]]:
    return sorted(served_operations(app.routes) - described())


def test_every_route_of_the_app_is_described(client: TestClient) -> None:
    app = client.app
    assert isinstance(app, FastAPI)
    served = served_operations(app.routes)
    # The walk itself reaches into included routers, plain Starlette routes and mounts.
    assert {("POST", "/token"), ("GET", "/audit/api/events"), ("GET", "/static/{path}"),
            ("GET", "/openapi.json"), ("GET", "/policies/{client_id}/v{version}")} <= served
    assert undescribed(app) == [], "routes without an OpenAPI description: add them to gateway/web/openapi.py"


def test_a_new_route_without_a_description_is_noticed(client: TestClient) -> None:
    app = client.app
    assert isinstance(app, FastAPI)

    async def extra() -> Response:
        return Response()

    app.add_api_route("/undescribed/{thing}", extra, methods=["PUT"])
    assert undescribed(app) == [("PUT", "/undescribed/{thing}")]


def test_the_published_description_lists_what_the_app_serves(client: TestClient) -> None:
    response = client.get("/openapi.json")

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    document = response.json()
    assert document["openapi"] == "3.1.0"
    assert document["servers"] == [{"url": ISSUER}]
    published = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    app = client.app
    assert isinstance(app, FastAPI)
    assert published == served_operations(app.routes)


def test_demo_routes_are_published_only_in_demo_mode(make_client: Callable[..., TestClient]) -> None:
    client = make_client(demo=False, staff=[])

    paths = client.get("/openapi.json").json()["paths"]

    assert "/demo-idp/authorize" not in paths
    assert "/token" in paths


def test_the_description_is_a_valid_openapi_3_1_document() -> None:
    document = openapi_document(ISSUER)
    # The document against the OpenAPI 3.1 specification's own schema, with every schema in it
    # checked as JSON Schema 2020-12 (OpenAPI 3.1's dialect).
    problems = [error.message for error in OpenAPIV31SpecValidator(document).iter_errors()]
    assert problems == []
    # Every reference resolves inside the document.
    text = str(document)
    for name in {part.split("'")[0] for part in text.split("#/components/schemas/")[1:]}:
        assert name in document["components"]["schemas"], name
    for path, item in document["paths"].items():
        for method, operation in item.items():
            assert operation["responses"], (method, path)
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path":
                    assert "{" + parameter["name"] + "}" in path, (method, path, parameter["name"])
    operation_ids = [op["operationId"] for item in document["paths"].values() for op in item.values()]
    assert len(operation_ids) == len(set(operation_ids))


def test_oauth_endpoints_take_form_bodies_and_answer_rfc_6749_errors() -> None:
    paths = openapi_document(ISSUER)["paths"]
    for path in ("/token", "/introspect", "/revoke"):
        operation = paths[path]["post"]
        assert list(operation["requestBody"]["content"]) == ["application/x-www-form-urlencoded"]
        assert operation["responses"]["400"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/OAuthError"}
        for status in ("429", "503"):
            assert operation["responses"][status]["headers"]["Retry-After"]["required"] is True
    assert "302" in paths["/authorize"]["get"]["responses"]
    assert paths["/authorize"]["get"]["responses"]["302"]["headers"]["Location"]["required"] is True


def test_rate_limited_routes_describe_429_with_retry_after() -> None:
    paths = openapi_document(ISSUER)["paths"]
    limited = [("get", "/authorize"), ("post", "/authorize"), ("post", "/token"), ("post", "/introspect"),
               ("post", "/revoke"), ("post", "/account/withdraw"), ("post", "/account/erase"),
               ("post", "/audit/login"), ("get", "/audit/api/events"),
               ("post", "/miniprogram/{provider_id}/login")]
    for method, path in limited:
        reply = paths[path][method]["responses"]["429"]
        assert reply["headers"]["Retry-After"]["required"] is True, (method, path)


def test_the_validator_notices_an_invalid_description() -> None:
    document = openapi_document(ISSUER)
    document["paths"]["/jwks"]["get"]["parameters"] = [{"name": "kid", "in": "body"}]
    document["components"]["schemas"]["OAuthError"]["type"] = "strin"

    assert len(list(OpenAPIV31SpecValidator(document).iter_errors())) >= 2
    assert openapi_document(ISSUER)["components"]["schemas"]["OAuthError"]["type"] == "object"  # untouched
