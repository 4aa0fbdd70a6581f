"""Searches and questions, each written to the audit trail whatever its outcome."""

import time
import uuid
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import transaction
from django.http import Http404

from kb import metrics, request_context
from kb.audit import audit_record, one_writer
from kb.models import Collection, ModelProfile, Outcome
from kb.principal import Principal
from retrieval import answer_queue, followup, llm, prompting, usage
from retrieval.chat_client import Usage
from retrieval.citations import Checked, citations_check
from retrieval.prompting import messages_for, sources_fitting
from retrieval.search import Passage, SearchMode, SearchResult, passages_search, scope_collections

# The name that stands for the settings' model (LLM_BASE_URL, LLM_MODEL) where a model
# profile's name is expected, as in the usage rows.
DEFAULT_PROFILE = "default"


class QuestionTooLong(ValueError):
    pass


class ModelBusy(RuntimeError):
    """Too many questions ahead for the model: the wait would pass
    KB_ANSWER_MAX_WAIT_SECONDS. The passages found still stand."""

    def __init__(self, full: answer_queue.Full, answer: "Answer") -> None:
        self.ahead = full.ahead
        self.retry_after = full.retry_after()
        self.query_id = answer.query_id
        self.passages = answer.passages
        ahead = "1 question is" if self.ahead == 1 else f"{self.ahead} questions are"
        super().__init__(
            f"The answering model is busy: {ahead} ahead of yours, about "
            f"{full.wait_seconds:.0f} s of waiting. Try again in {self.retry_after} s; "
            "here are the closest passages."
        )


def _elapsed_ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


def _private_detail(private: bool) -> dict[str, Any]:
    """What a private question's audit row says of it: that it was private, and whether
    its texts were kept out (KB_PRIVATE_AUDIT_TEXTS)."""
    if not private:
        return {}
    return {"private": True, **({} if _texts_kept(private) else {"texts_withheld": True})}


def _ask_action(evaluation: int | None) -> str:
    return "evaluation.ask" if evaluation else "ask"


def _evaluation_detail(evaluation: int | None) -> dict[str, Any]:
    return {"evaluation": evaluation} if evaluation else {}


def _texts_kept(private: bool) -> bool:
    return not private or settings.KB_PRIVATE_AUDIT_TEXTS


def _denied(
    principal: Principal,
    action: str,
    query: str,
    slugs: Sequence[str] | None,
    private: bool = False,
    **detail: Any,
) -> None:
    audit_record(
        action=action,
        actor=principal,
        outcome=Outcome.DENIED,
        query=query if _texts_kept(private) else "",
        detail={"requested": list(slugs or []), **detail, **_private_detail(private)},
    )
    metrics.QUERIES.labels(action, Outcome.DENIED).inc()


def _scope(
    principal: Principal,
    action: str,
    query: str,
    slugs: Sequence[str] | None,
    private: bool = False,
    **detail: Any,
) -> list[Collection]:
    """The collections to search; a request for an unreadable one is audited, then 404."""
    try:
        return scope_collections(principal, slugs)
    except Http404:
        _denied(principal, action, query, slugs, private, **detail)
        raise


def search_run(
    *,
    principal: Principal,
    query: str,
    collections: Sequence[str] | None = None,
    top_k: int = 10,
    document_ids: Sequence[int] | None = None,
    content_types: Sequence[str] | None = None,
    updated_after: datetime | None = None,
    mode: SearchMode = "hybrid",
) -> tuple[str, SearchResult]:
    """(query id, result). A collection that may not be read gives Http404, audited."""
    started = time.perf_counter()
    scope = _scope(principal, "search", query, collections)
    result = passages_search(
        query=query,
        collections=scope,
        top_k=top_k,
        document_ids=document_ids,
        content_types=content_types,
        updated_after=updated_after,
        mode=mode,
    )
    query_id = uuid.uuid4().hex
    audit_record(
        action="search",
        actor=principal,
        collections=[c.slug for c in scope],
        query=query,
        chunk_ids=[p.chunk_id for p in result.passages],
        latency_ms=_elapsed_ms(started),
        detail={"query_id": query_id, "mode": mode},
    )
    metrics.QUERIES.labels("search", Outcome.OK).inc()
    return query_id, result


@dataclass
class Answer:
    """A question being answered: `events()` yields ("queued", {"ahead": n}) while it
    waits its turn for the model, ("token", text) while the model writes, then
    ("citations", [...]) and ("done", {...}). Its audit row is written, and its place in
    the model's line freed, when the events end, also when the consumer stops early (a
    cut-off stream)."""

    query_id: str
    principal: Principal
    question: str
    rewrite: followup.Rewrite  # what was searched: the question, or made standalone
    scope: list[Collection]
    passages: list[Passage]
    sources: list[Passage]
    model: str
    refused: bool
    best_similarity: float
    started: float
    info: request_context.RequestInfo
    tokens: Iterator[str] = field(default_factory=lambda: iter(()))
    unavailable: str = ""  # why no model could answer; the passages still stand
    usage: Usage = field(default_factory=Usage)  # the model server's count
    profile: ModelProfile | None = None  # whose prices; None: the settings' model
    prompt_estimate: int = 0  # the prompt's tokens, should the server not report them
    first_token_ms: int | None = None
    text: str = ""
    checked: Checked | None = None
    private: bool = False  # kept out of conversations; its row's texts per the setting
    evaluation: int | None = None  # the evaluation run that asked (retrieval.evaluation)
    place: answer_queue.Place | None = None  # in the model's line
    ask: Callable[[], Iterator[str]] | None = None  # the model's tokens, once its turn comes

    def events(self) -> Generator[tuple[str, Any], None, None]:
        outcome, error = Outcome.ERROR, "the answer was cut off"
        first = not self.refused  # a refusal is kb's sentence, not the model's
        try:
            if self.place is not None and self.place.waiting:
                for ahead in self.place.wait():
                    yield "queued", {"ahead": ahead}
                assert self.ask is not None
                try:
                    self.tokens = self.ask()
                except llm.LlmUnavailable as failure:
                    self.unavailable = str(failure)
                    raise
            for token in self.tokens:
                if self.place is not None:
                    self.place.renew()
                if first:
                    waited = time.perf_counter() - self.started
                    metrics.FIRST_TOKEN_SECONDS.observe(waited)
                    self.first_token_ms = int(waited * 1000)
                    first = False
                self.text += token
                yield "token", token
            # A refusal is kb's own sentence, not a claim needing a source.
            self.checked = (
                Checked(self.text, [], 0)
                if self.refused
                else citations_check(self.text, self.sources)
            )
            yield "citations", self.checked.citations
            outcome, error = (Outcome.REFUSED if self.refused else Outcome.OK), ""
            yield "done", self.summary()
        except llm.LlmUnavailable as failure:
            error = str(failure)
            metrics.ERRORS.labels("model").inc()
            raise
        finally:
            close = getattr(self.tokens, "close", None)
            if close is not None:
                close()  # a reader who left: the model stops writing for nobody
            if self.place is not None:
                self.place.leave(answered=outcome == Outcome.OK)
            self._audit(outcome, error)

    def complete(self) -> Checked:
        """The whole answer at once: drains the events (the row is written), then the
        checked answer with its citations; `summary()` says the rest."""
        for _ in self.events():
            pass
        assert self.checked is not None
        return self.checked

    def summary(self) -> dict[str, Any]:
        checked = self.checked
        return {
            "query_id": self.query_id,
            "answer": checked.answer if checked else self.text,
            "refused": self.refused,
            "model": self.model,
            "unsupported_sentences": checked.unsupported_sentences if checked else 0,
        }

    def _audit(self, outcome: str, error: str) -> None:
        texts = _texts_kept(self.private)
        # The usage row goes in the audit row's transaction (one writer at a time on SQLite).
        with request_context.using(self.info), one_writer(), transaction.atomic():
            audit_record(
                action=_ask_action(self.evaluation),
                actor=self.principal,
                outcome=outcome,
                collections=[c.slug for c in self.scope],
                query=self.question if texts else "",
                chunk_ids=[p.chunk_id for p in self.sources or self.passages],
                cited_chunk_ids=[c.passage.chunk_id for c in self.checked.citations]
                if self.checked
                else [],
                model=self.model,
                answer=(self.checked.answer if self.checked else self.text) if texts else "",
                latency_ms=_elapsed_ms(self.started),
                detail={
                    "query_id": self.query_id,
                    **({"rewritten_by": self.rewrite.how} if self.rewrite.how else {}),
                    **({"error": error} if error else {}),
                    **_private_detail(self.private),
                    **_evaluation_detail(self.evaluation),
                },
                rewritten_query=self.rewrite.query if self.rewrite.how and texts else "",
            )
            if self.model and not self.unavailable:  # the model was reached
                self._usage_record()
        metrics.QUERIES.labels(_ask_action(self.evaluation), outcome).inc()
        metrics.TOKENS_GENERATED.inc(self.usage.completion_tokens)

    def _usage_record(self) -> None:
        """The answer's tokens, on every path, with its audit row."""
        estimated = not self.usage.reported and self.prompt_estimate > 0
        if estimated:
            self.usage.prompt_tokens = self.prompt_estimate
        usage.usage_record(
            query_id=self.query_id,
            principal=self.principal,
            collections=_involved(self.scope, self.sources),
            profile=self.profile,
            model=self.model,
            usage=self.usage,
            prompt_estimated=estimated,
            first_token_ms=self.first_token_ms,
        )


def _involved(scope: list[Collection], passages: list[Passage]) -> list[Collection]:
    """The collections the passages came from (all searched ones when there are none)."""
    used = {p.collection_id for p in passages}
    return [c for c in scope if c.pk in used] or scope


def _pool(
    owner: Collection | None, involved: list[Collection], chosen: str = ""
) -> tuple[llm.LlmPool, ModelProfile | None]:
    """The `chosen` profile (by name), else the collection's own when one collection is
    in play (and its pool); never a non-local model for a sensitive collection."""
    profile = profile_named(chosen) if chosen else (owner.model_profile if owner else None)
    pool = llm.pool_for(profile)
    if not pool.is_local and any(c.sensitive for c in involved):
        profile, pool = None, llm.pool_for(None)
        if not pool.is_local:
            raise llm.LlmUnavailable("no local model is configured for a sensitive collection")
    return pool, profile


def profile_named(name: str) -> ModelProfile | None:
    """The model profile called `name`; None for DEFAULT_PROFILE, the settings' model.
    Raises llm.LlmUnavailable for a name that is neither."""
    if name == DEFAULT_PROFILE:
        return None
    profile = ModelProfile.objects.filter(name=name).first()
    if profile is None:
        raise llm.LlmUnavailable(f"there is no model profile called {name!r}")
    return profile


def _rewriter(scope: list[Collection]) -> llm.LlmPool | None:
    """The model that may rewrite a follow-up: the one that would answer from this scope,
    none where a sensitive collection has no local model, nor while every slot is taken
    (the rewrite would wait behind answers, then be thrown away)."""
    try:
        pool = _pool(scope[0] if len(scope) == 1 else None, scope)[0]
    except llm.LlmUnavailable:
        return None
    return pool if answer_queue.in_line(pool.line) < pool.slots else None


def question_answer(
    *,
    principal: Principal,
    question: str,
    collections: Sequence[str] | None = None,
    history: Sequence[dict[str, str]] = (),
    private: bool = False,
    profile: str = "",
    evaluation: int | None = None,
) -> Answer:
    """Retrieve, then either refuse without asking the model or start its answer.
    `private`: the audit rows say so, and keep no texts if KB_PRIVATE_AUDIT_TEXTS is off.
    `profile`: a model profile's name (or "default", the settings' model) to answer with
    instead of the collection's own; a sensitive collection still gets a local model.
    `evaluation`: the evaluation run asking, whose questions are audited as
    "evaluation.ask" with the run's id, apart from people's questions.

    Raises Http404 (a collection that may not be read), QuestionTooLong,
    usage.BudgetExceeded (before the model is asked; passages are not budgeted) or
    ModelBusy (the wait for the model would be too long; it carries the passages); when
    no model endpoint answers, the Answer says why in `unavailable`. A question that
    must wait its turn waits in its events. Each outcome is audited."""
    started = time.perf_counter()
    info = request_context.current()
    query_id = uuid.uuid4().hex
    question = question.strip()
    action, marks = _ask_action(evaluation), _evaluation_detail(evaluation)
    if len(question) > settings.KB_MAX_QUESTION_CHARS:
        _denied(principal, action, question[:500], collections, private, **marks)
        raise QuestionTooLong(
            f"the question is longer than {settings.KB_MAX_QUESTION_CHARS} characters"
        )
    scope = _scope(principal, action, question, collections, private, **marks)
    _within_budget(principal, action, question, collections, private=private, **marks)
    rewrite = followup.standalone_query(
        question=question, history=history, pool=_rewriter(scope) if history else None
    )
    result = passages_search(
        query=rewrite.query,
        collections=scope,
        top_k=settings.KB_ANSWER_SOURCES * 2,
        with_similarity=True,
    )
    answer = Answer(
        query_id=query_id,
        principal=principal,
        question=question,
        rewrite=rewrite,
        scope=scope,
        passages=result.passages,
        sources=[],
        model="",
        refused=False,
        best_similarity=result.best_similarity,
        started=started,
        info=info,
        private=private,
        evaluation=evaluation,
    )
    involved = _involved(scope, result.passages)
    # Whose prompt and refusal message: the collection's own when one is in play.
    owner = involved[0] if len(involved) == 1 else None
    if not result.passages or result.best_similarity < settings.KB_REFUSAL_THRESHOLD:
        answer.refused = True
        refusal = (owner.refusal_message if owner else "") or settings.KB_REFUSAL_MESSAGE
        answer.tokens = iter([refusal])
        return answer
    _within_budget(
        principal, action, question, collections, involved=involved, private=private, **marks
    )
    answer.sources = sources_fitting(result.passages)
    try:
        pool, answer.profile = _pool(owner, involved, profile)
    except llm.LlmUnavailable as failure:
        return _unavailable(answer, failure)
    answer.model = pool.model
    messages = messages_for(
        question=question,
        sources=answer.sources,
        history=list(history),
        collection_prompt=owner.system_prompt if owner else "",
    )
    answer.prompt_estimate = usage.estimated_tokens(messages)
    try:
        # An evaluation's question is work in the background: it waits its turn, where
        # a person is told to come back (a run turned away would stop there).
        answer.place = answer_queue.join(pool.line, pool.slots, bounded=evaluation is None)
    except answer_queue.Full as full:
        busy = ModelBusy(full, answer)
        _denied(
            principal,
            action,
            question,
            collections,
            private,
            query_id=query_id,
            busy={"ahead": full.ahead, "wait_seconds": round(full.wait_seconds)},
            **marks,
        )
        raise busy from None

    def ask() -> Iterator[str]:
        return pool.stream(
            messages, max_tokens=settings.KB_LLM_MAX_TOKENS, stop=prompting.STOP, usage=answer.usage
        )

    answer.ask = ask
    if answer.place.waiting:
        return answer  # its events wait for its turn, then ask
    try:
        answer.tokens = ask()
    except llm.LlmUnavailable as failure:
        return _unavailable(answer, failure)
    return answer


def _within_budget(
    principal: Principal,
    action: str,
    question: str,
    slugs: Sequence[str] | None,
    *,
    involved: list[Collection] | None = None,
    private: bool = False,
    **marks: Any,
) -> None:
    """The user's daily budget, or with `involved` these collections' monthly ones. A
    spent budget is audited as a denied `action` (with `marks` in its detail), then
    raised."""
    try:
        if involved is None:
            usage.user_budget_check(principal)
        else:
            usage.collections_budget_check(involved)
    except usage.BudgetExceeded as spent:
        _denied(principal, action, question, slugs, private, **spent.detail(), **marks)
        raise


def _unavailable(answer: Answer, failure: llm.LlmUnavailable) -> Answer:
    answer.unavailable = str(failure)
    if answer.place is not None:
        answer.place.leave()
    metrics.ERRORS.labels("model").inc()
    answer._audit(Outcome.ERROR, answer.unavailable)
    return answer
