"""REST: /api/v1/conversations, the caller's own conversations of the web UI (mounted
by server.api), shown as the web UI shows them: a citation, or an answer, from a
collection the caller may no longer read is left out."""

from datetime import datetime
from typing import Annotated, Any

from django.http import HttpRequest
from ninja import Router, Schema
from ninja.params.functions import Path as PathField

from kb.api_auth import principal_of
from kb.ids import ID_MAX
from kb.pagination import Cursor, Limit, page
from retrieval.conversations import conversation_get, exchanges_shown
from retrieval.models import Conversation

router = Router(tags=["conversations"])


class ConversationOut(Schema):
    id: int
    title: str
    created_at: datetime
    updated_at: datetime


class ConversationPage(Schema):
    items: list[ConversationOut]
    next_cursor: str | None


class ExchangeOut(Schema):
    query_id: str
    question: str
    answer: str
    refused: bool
    sources_gone: bool
    citations: list[dict[str, Any]]
    created_at: datetime


class ConversationDetail(ConversationOut):
    exchanges: list[ExchangeOut]


def _out(conversation: Conversation) -> dict[str, Any]:
    return {
        "id": conversation.pk,
        "title": conversation.title,
        "created_at": conversation.created_at,
        "updated_at": conversation.updated_at,
    }


@router.get("/conversations", response=ConversationPage)
def conversations_list(
    request: HttpRequest,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> ConversationPage:
    """The caller's conversations, the latest first."""
    own = Conversation.objects.filter(user=principal_of(request).user)
    items, next_cursor = page(own, order=("-updated_at", "-pk"), limit=limit, cursor=cursor)
    return ConversationPage(
        items=[ConversationOut(**_out(c)) for c in items], next_cursor=next_cursor
    )


@router.get("/conversations/{conversation_id}", response=ConversationDetail)
def conversation_detail(
    request: HttpRequest, conversation_id: Annotated[int, PathField(ge=1, le=ID_MAX)]
) -> ConversationDetail:
    user = principal_of(request).user
    conversation = conversation_get(user, conversation_id)
    exchanges = [
        ExchangeOut(
            query_id=e.query_id,
            question=e.question,
            answer=e.answer,
            refused=e.refused,
            sources_gone=e.sources_gone,
            citations=[{k: v for k, v in c.items() if k != "collection_id"} for c in e.citations],
            created_at=e.created_at,
        )
        for e in exchanges_shown(user, conversation)
    ]
    return ConversationDetail(**_out(conversation), exchanges=exchanges)
