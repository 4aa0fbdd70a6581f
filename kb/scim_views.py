"""/scim/v2/...: the identity provider's bearer token checked, then kb.scim answers."""

import hmac
import json

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from scim2_models import SCIMException
from scim2_server.requests import ScimRequest

from kb.api_auth import token_refused
from kb.scim import error_body, handler

SCIM_JSON = "application/scim+json"


def _refused(status: int, detail: str) -> HttpResponse:
    response = HttpResponse(error_body(status, detail), status=status, content_type=SCIM_JSON)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="SCIM"'
    return response


def _authorized(request: HttpRequest) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    expected = settings.KB_SCIM_TOKEN
    return scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), expected.encode())


@csrf_exempt
def scim(request: HttpRequest, path: str = "") -> HttpResponse:
    if not settings.KB_SCIM_TOKEN:
        return _refused(404, "SCIM provisioning is off: set KB_SCIM_TOKEN to turn it on.")
    if not _authorized(request):
        token_refused(request.path)
        return _refused(401, "The SCIM bearer token is missing or wrong.")
    body = request.body
    if b"\x00" in body or b"\\u0000" in body or "%00" in request.META.get("QUERY_STRING", ""):
        return _refused(400, "The request holds a NUL character, which kb refuses.")
    scim_request = ScimRequest(
        method=request.method or "GET",
        base_url=request.build_absolute_uri("/scim/v2"),
        path=f"/{path}",
        query={key: request.GET[key] for key in request.GET},
        headers=dict(request.headers),
        body=body,
    )
    try:
        answer = handler().handle(scim_request)
    except SCIMException as error:  # a refusal; anything else is a bug, and a 500
        answer = handler().service.error_response(error)
    body = b"" if answer.body is None else json.dumps(answer.body).encode()
    return HttpResponse(body, status=answer.status, headers=answer.headers)
