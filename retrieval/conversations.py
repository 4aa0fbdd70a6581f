"""The web UI's conversations: a user's questions, their answers, follow-ups and feedback.

Private to their user: every read goes through `conversation_get`, which gives 404 for
anyone else's. Answers still come from services.question_answer, audited there.
"""

from collections.abc import Generator, Sequence
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.http import Http404

from ingest.models import Chunk
from kb.audit import audit_record
from kb.models import AuditEvent
from kb.principal import Principal
from kb.selectors import readable_collection_ids
from retrieval import llm, services
from retrieval.citations import Citation
from retrieval.models import Conversation, Exchange, Feedback, Rating
from retrieval.search import Passage

HISTORY_EXCHANGES = 3
PREVIEW_CHARS = 400


def conversations_of(user: User, limit: int = 30) -> list[Conversation]:
    return list(Conversation.objects.filter(user=user)[:limit])


def conversation_get(user: User, conversation_id: int) -> Conversation:
    conversation = Conversation.objects.filter(pk=conversation_id, user=user).first()
    if conversation is None:
        raise Http404("No such conversation.")
    return conversation


def exchanges_shown(user: User, conversation: Conversation) -> list[Exchange]:
    """The conversation's exchanges as the user may see them now. A citation stays only
    while its collection may still be read, and an answer that drew on a collection no
    longer readable loses its text too (`sources_gone`): a revoked membership hides
    what was seen before. Its sources are the cited passages and those the audit row
    of the question names."""
    readable = readable_collection_ids(Principal(user=user))
    exchanges = list(conversation.exchanges.select_related("feedback"))
    used = _source_collections(user, conversation, [e.query_id for e in exchanges])
    for exchange in exchanges:
        cited = {c.get("collection_id") for c in exchange.citations}
        exchange.sources_gone = not (cited | used.get(exchange.query_id, set())) <= readable
        exchange.citations = [c for c in exchange.citations if c.get("collection_id") in readable]
        if exchange.sources_gone:
            exchange.answer = ""
    return exchanges


def _source_collections(
    user: User, conversation: Conversation, query_ids: list[str]
) -> dict[str, set[int]]:
    """query id -> the collections of the passages its audit row names as sources. The
    rows are found by the indexed columns (who, since when) before the JSON detail, so
    the cost follows the user's questions, not the size of the trail."""
    rows = AuditEvent.objects.filter(
        action="ask",
        actor_name=user.get_username(),
        created_at__gte=conversation.created_at,
        detail__query_id__in=query_ids,
    ).values_list("detail", "chunk_ids")
    chunk_ids = {n for _, ids in rows for n in ids}
    collection_of = dict(Chunk.objects.filter(pk__in=chunk_ids).values_list("pk", "collection_id"))
    return {
        detail["query_id"]: {collection_of[n] for n in ids if n in collection_of}
        for detail, ids in rows
    }


def citation_dict(citation: Citation) -> dict[str, Any]:
    # The collection decides, each time the conversation is shown, whether it still may be.
    return {**citation.as_dict(), "collection_id": citation.passage.collection_id}


def passage_dict(passage: Passage) -> dict[str, Any]:
    text = passage.text
    return {
        "chunk_id": passage.chunk_id,
        "document_title": passage.document_title,
        "collection": passage.collection,
        "page": passage.page,
        "text": text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS] + "…",
        "url": passage.url,
    }


def _history(conversation: Conversation | None) -> list[dict[str, str]]:
    if conversation is None:
        return []
    # As shown: an answer whose sources the user may no longer read is not sent either.
    recent = exchanges_shown(conversation.user, conversation)[-HISTORY_EXCHANGES:]
    turns = []
    for exchange in recent:
        if exchange.expired_at:
            continue  # its texts are gone (retrieval.retention)
        turns.append({"role": "user", "content": exchange.question})
        if exchange.answer and not exchange.refused:
            turns.append({"role": "assistant", "content": exchange.answer})
    return turns


def conversation_ask(
    *,
    user: User,
    question: str,
    collections: Sequence[str] | None,
    conversation: Conversation | None = None,
    private: bool = False,
) -> Generator[tuple[str, Any], None, None]:
    """Answer a question in a conversation (a new one when None), as events for the page:
    `passages` (when refused or no model answers), `queued` (the questions ahead, while
    it waits for the model), `token`s, `citations`, `error` or
    `unavailable`, then `saved` with the conversation. The exchange is stored when the
    events end, also when the reader leaves early. Raises as services.question_answer.

    A `private` question is answered the same (after the conversation's exchanges, if
    one is given) but stored nowhere: no conversation, no exchange; the last event is
    `private`. Only its audit row remains (see services.question_answer)."""
    answer = services.question_answer(
        principal=Principal(user=user),
        question=question,
        collections=collections,
        history=_history(conversation),
        private=private,
    )
    return _answer_events(user, conversation, answer)


def _answer_events(
    user: User, conversation: Conversation | None, answer: services.Answer
) -> Generator[tuple[str, Any], None, None]:
    citations: list[dict[str, Any]] = []
    error = answer.unavailable
    finished = False
    events = answer.events()
    try:
        if answer.refused or answer.unavailable:
            yield "passages", [passage_dict(p) for p in answer.passages[:5]]
        if answer.unavailable:
            yield "unavailable", {"detail": f"The answering model is unavailable ({error})."}
        else:
            try:
                for name, data in events:
                    if name == "citations":
                        citations = [citation_dict(c) for c in data]
                        data = citations
                    yield name, data
            except llm.LlmUnavailable as failure:
                error = f"The answering model stopped ({failure})."
                yield "error", {"detail": error}
        finished = True
    finally:
        events.close()  # a reader who left: the answer's audit row is written now
        if not answer.private:
            conversation = _exchange_save(user, conversation, answer, citations, error)
    if finished and answer.private:
        yield "private", {"query_id": answer.query_id}
    elif finished and conversation is not None:
        yield "saved", {"conversation_id": conversation.pk, "query_id": answer.query_id}


def _exchange_save(
    user: User,
    conversation: Conversation | None,
    answer: services.Answer,
    citations: list[dict[str, Any]],
    error: str,
) -> Conversation:
    text = answer.checked.answer if answer.checked else answer.text
    with transaction.atomic():
        if conversation is None:
            conversation = Conversation.objects.create(user=user, title=answer.question[:200])
        Exchange.objects.create(
            conversation=conversation,
            query_id=answer.query_id,
            question=answer.question,
            answer=text,
            collections=" ".join(sorted(c.slug for c in answer.scope)),
            refused=answer.refused,
            error=error,
            citations=citations,
        )
        conversation.save(update_fields=["updated_at"])
    return conversation


def feedback_give(*, user: User, query_id: str, rating: Rating, comment: str = "") -> Feedback:
    """Thumbs up or down on one's own answer; given again, it replaces the earlier one."""
    exchange = Exchange.objects.filter(query_id=query_id, conversation__user=user).first()
    if exchange is None:
        raise Http404("No such answer.")
    with transaction.atomic():
        feedback, _ = Feedback.objects.update_or_create(
            exchange=exchange, defaults={"rating": rating, "comment": comment.strip()[:2000]}
        )
        audit_record(
            action="feedback",
            actor=Principal(user=user),
            collections=exchange.collections.split(),  # whose retention its comment follows
            detail={"query_id": query_id, "rating": str(rating), "comment": feedback.comment},
        )
    return feedback
