"""The REST API describes itself: OpenAPI 3 with every endpoint, its errors and the
bearer scheme, and a docs page that loads nothing from outside this server."""

import re

from django.contrib.staticfiles import finders
from django.test import Client

PATHS = {
    "/api/v1/collections": {"get", "post"},
    "/api/v1/collections/{slug}": {"get", "patch", "delete"},
    "/api/v1/collections/{slug}/members": {"get"},
    "/api/v1/collections/{slug}/members/{kind}/{name}": {"put", "delete"},
    "/api/v1/collections/{slug}/documents": {"get", "post"},
    "/api/v1/documents/{document_id}": {"get", "delete"},
    "/api/v1/documents/{document_id}/content": {"get"},
    "/api/v1/documents/{document_id}/reingest": {"post"},
    "/api/v1/chunks/{chunk_id}": {"get"},
    "/api/v1/tokens": {"get", "post"},
    "/api/v1/tokens/{token_id}": {"delete"},
    "/api/v1/audit": {"get"},
    "/api/v1/audit/verify": {"get"},
    "/api/v1/conversations": {"get"},
    "/api/v1/conversations/{conversation_id}": {"get"},
    "/api/v1/search": {"post"},
    "/api/v1/ask": {"post"},
    "/api/v1/usage": {"get"},
}


def test_the_spec_has_every_endpoint_its_errors_and_the_bearer_scheme(db):
    spec = Client().get("/api/v1/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    assert {path: set(ops) for path, ops in spec["paths"].items() if path in PATHS} == PATHS
    schemes = spec["components"]["securitySchemes"]
    assert {"type": "http", "scheme": "bearer"}.items() <= schemes["BearerTokenAuth"].items()
    error = {"$ref": "#/components/schemas/Error"}
    for operations in spec["paths"].values():
        for operation in operations.values():
            for status in ("401", "404", "422", "429"):
                assert (
                    operation["responses"][status]["content"]["application/json"]["schema"] == error
                )
    assert spec["components"]["schemas"]["Error"]["required"] == ["code", "message"]


def test_the_docs_page_loads_only_this_servers_files(db):
    page = Client().get("/api/v1/docs")
    assert page.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.content.decode())
    assert assets and all(a.startswith("/static/") for a in assets), assets
    assert all(finders.find(a.removeprefix("/static/")) for a in assets)
