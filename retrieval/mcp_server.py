"""kb as an MCP server (the official `mcp` SDK): the tools agents use for research over
documents, each call one audited query in the caller's scope.

- `search(query, collections?, top_k?)`: passages, each with an id for `fetch`.
- `fetch(id)`: a passage's (`chunk:<n>`) or a document's (`document:<n>`) text and URL.
- `ask(question, collections?)`: a cited answer, as /api/v1/ask gives it.
- `list_collections()`: what the caller may read, with its role.

Over streamable HTTP at /mcp, the bearer token is the caller's, as for REST: checked
before any MCP message, and again on every tool call (a token revoked mid-session is
refused at once). Over stdio (`manage.py mcp --token-file F`) the token is the file's.
"""

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import Http404
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings

from ingest.models import Chunk
from ingest.selectors import document_read, passage_read
from kb import request_context
from kb.api_auth import token_principal, token_refused
from kb.audit import audit_record
from kb.principal import Principal
from kb.selectors import readable_collections
from retrieval import services, usage
from retrieval.llm import LlmUnavailable

PrincipalOf = Callable[[Context], Principal | None]
INSTRUCTIONS = (
    "kb holds an organisation's documents. search finds passages; fetch reads a passage or "
    "a whole document by the id search gave; ask answers a question with numbered "
    "citations from the documents. Only collections the caller may read are searched."
)


class Refused(ToolError):
    """A tool's error, in words for the agent and its user."""


def bearer_principal(authorization: str | None) -> Principal | None:
    """The live token's principal for an `Authorization: Bearer ...` header."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    return token_principal(token.strip())


def http_principal(ctx: Context) -> Principal | None:
    headers = ctx.headers or {}
    return bearer_principal(headers.get("authorization"))


def build(principal_of: PrincipalOf, *, site: str = "") -> MCPServer:
    """The server; `principal_of` says who makes a tool call (None: refused)."""
    server = MCPServer(name="kb", instructions=INSTRUCTIONS, version="1")

    def call(ctx: Context, work: Callable[..., dict[str, Any]], *args: Any) -> Any:
        """`work(principal, *args)` off the event loop, as the caller of this tool call."""
        return sync_to_async(_as_caller)(principal_of, ctx, work, *args)

    @server.tool()
    async def search(
        query: str, ctx: Context, collections: list[str] | None = None, top_k: int = 10
    ) -> dict[str, Any]:
        """Passages matching the query, best first, from the readable collections (or
        the ones named). Each result's id can be passed to fetch."""
        return await call(ctx, _search, query, collections, top_k, site)  # type: ignore[no-any-return]

    @server.tool()
    async def fetch(id: str, ctx: Context) -> dict[str, Any]:
        """The full text of a passage (chunk:<n>) or a document (document:<n>)."""
        return await call(ctx, _fetch, id, site)  # type: ignore[no-any-return]

    @server.tool()
    async def ask(
        question: str, ctx: Context, collections: list[str] | None = None
    ) -> dict[str, Any]:
        """An answer from the documents with numbered citations, or kb's refusal when the
        documents do not answer."""
        return await call(ctx, _ask, question, collections, site)  # type: ignore[no-any-return]

    @server.tool()
    async def list_collections(ctx: Context) -> dict[str, Any]:
        """The collections the caller may read, with the caller's role in each."""
        return await call(ctx, _collections)  # type: ignore[no-any-return]

    return server


def _as_caller(
    principal_of: PrincipalOf, ctx: Context, work: Callable[..., dict[str, Any]], *args: Any
) -> dict[str, Any]:
    principal = principal_of(ctx)
    if principal is None:
        raise Refused("The API token is expired, revoked or invalid.")
    request = ctx.request_context.request
    if request is None:  # stdio: the command's own request id
        return work(principal, *args)
    # The tool runs in the MCP session's task, not the HTTP request's: who asks, and the
    # request id that request's access line holds, come from its headers.
    remote = request.client.host if request.client else ""
    with request_context.using(request_context.request_info(request.headers, remote)):
        return work(principal, *args)


def _search(
    principal: Principal, query: str, collections: list[str] | None, top_k: int, site: str
) -> dict[str, Any]:
    if not query.strip() or len(query) > 2000:
        raise Refused("The query must hold 1 to 2,000 characters.")
    try:
        query_id, result = services.search_run(
            principal=principal, query=query, collections=collections, top_k=min(max(top_k, 1), 50)
        )
    except Http404:
        raise Refused("No such collection, or you may not read it.") from None
    return {
        "query_id": query_id,
        "results": [
            {
                "id": f"chunk:{p.chunk_id}",
                "title": p.document_title,
                "collection": p.collection,
                "text": p.text,
                "page": p.page,
                "score": round(p.score, 5),
                "url": site + p.url,
            }
            for p in result.passages
        ],
    }


def _fetch(principal: Principal, item: str, site: str) -> dict[str, Any]:
    kind, _, number = item.partition(":")
    if kind not in ("chunk", "document") or not number.isdigit() or len(number) > 18:
        raise Refused("An id looks like chunk:<n> or document:<n>, as search gives them.")
    try:
        if kind == "chunk":
            document, chunk, _ = passage_read(principal, int(number), context=0)
            text, url = chunk.text, f"{site}/passages/{chunk.pk}"
        else:
            document = document_read(principal, int(number))
            chunks = Chunk.objects.filter(version_id=document.live_version_id).order_by("index")
            text, url = "\n\n".join(c.text for c in chunks), f"{site}/documents/{document.pk}"
    except Http404:
        raise Refused(f"No such {kind}, or you may not read it.") from None
    return {
        "id": item,
        "title": document.title,
        "text": text,
        "url": url,
        "metadata": {"document_id": document.pk, "collection": document.collection.slug},
    }


def _ask(
    principal: Principal, question: str, collections: list[str] | None, site: str
) -> dict[str, Any]:
    try:
        answer = services.question_answer(
            principal=principal, question=question, collections=collections
        )
    except Http404:
        raise Refused("No such collection, or you may not read it.") from None
    except (services.QuestionTooLong, usage.BudgetExceeded, services.ModelBusy) as error:
        raise Refused(str(error)) from None
    if answer.unavailable:
        raise Refused("The answering model is unavailable; search still works.")
    try:
        checked = answer.complete()
    except LlmUnavailable:
        raise Refused("The answering model stopped answering; search still works.") from None
    citations = [{**c.as_dict(), "url": site + c.passage.url} for c in checked.citations]
    return {**answer.summary(), "citations": citations}


def _collections(principal: Principal) -> dict[str, Any]:
    readable = readable_collections(principal)
    audit_record(
        action="collection.list", actor=principal, collections=[c.slug for c, _ in readable]
    )
    return {
        "collections": [
            {"slug": c.slug, "name": c.name, "description": c.description, "role": role.label}
            for c, role in readable
        ]
    }


UNAUTHENTICATED = (
    b'{"code": "unauthenticated", "message": "The API token is expired, revoked or invalid."}'
)
Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]


def http_app() -> tuple[ASGIApp, Any]:
    """(the ASGI app for /mcp, the MCP server), the bearer token checked first."""
    server = build(http_principal)
    hosts = [h for h in settings.ALLOWED_HOSTS if h != "*"]
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection="*" not in settings.ALLOWED_HOSTS,
        allowed_hosts=[*hosts, *(f"{h}:*" for h in hosts)],
        allowed_origins=[
            f"{scheme}://{host}{port}"
            for scheme in ("http", "https")
            for host in hosts
            for port in ("", ":*")
        ],
    )
    inner = server.streamable_http_app(streamable_http_path="/mcp", transport_security=security)

    async def gate(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            authorization = headers.get(b"authorization", b"").decode("latin-1")
            principal = await sync_to_async(bearer_principal)(authorization)
            if principal is None:
                if authorization:
                    await sync_to_async(token_refused)("/mcp")
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"www-authenticate", b"Bearer"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": UNAUTHENTICATED})
                return
        await inner(scope, receive, send)

    return gate, inner
