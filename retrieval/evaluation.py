"""A collection's golden set (retrieval.golden) asked of one or more model profiles, each
question through question_answer as people's are, audited as "evaluation.ask" with the
run's id. Per profile:

- hit rate: of the questions that name documents, the share where one of them was among
  the passages found for the question;
- citation precision: of the passages cited in those answers, the share from a document
  the question names;
- refused: the share of questions (all answerable) that kb refused to answer;
- agreement: the share of answers agreeing with the expected one (retrieval.scoring: at
  least half of the expected answer's content words present), and the mean score;
- time to first token (median, ms) and tokens (prompt and completion) per question.
"""

import logging
import statistics
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.http import Http404
from django.utils import timezone

from kb.audit import Actor, audit_record
from kb.models import Collection, ModelProfile
from kb.principal import Principal
from retrieval import scoring, services, usage
from retrieval.golden import GoldenItem, documents_by_name
from retrieval.llm import LlmUnavailable
from retrieval.models import EvaluationRun, RunStatus

logger = logging.getLogger(__name__)

# What a run's summary shows, in order: (key, label, how it is written).
METRICS = (
    ("hit_rate", "hit rate", "{:.2f}"),
    ("citation_precision", "citation precision", "{:.2f}"),
    ("refused", "refused", "{:.2f}"),
    ("agreement", "agreement", "{:.2f}"),
    ("agreement_score", "agreement score", "{:.2f}"),
    ("ttft_ms", "first token ms", "{:.0f}"),
    ("prompt_tokens", "prompt tokens", "{:.0f}"),
    ("completion_tokens", "completion tokens", "{:.0f}"),
    ("tok_s", "tokens per second", "{:.1f}"),
    ("errors", "errors", "{}"),
)


def metrics_shown(run: EvaluationRun) -> list[tuple[str, str]]:
    """(label, value) for each of METRICS; "-" where the run measured nothing."""
    return [
        (label, "-" if run.metrics.get(key) is None else shape.format(run.metrics[key]))
        for key, label, shape in METRICS
    ]


class EvaluationRefused(ValueError):
    """The run cannot start: the message says why."""


def profile_names() -> list[str]:
    """The names a run may be asked for: the settings' model and every profile."""
    return [services.DEFAULT_PROFILE, *ModelProfile.objects.values_list("name", flat=True)]


def _profile_check(collection: Collection, name: str) -> None:
    try:
        profile = services.profile_named(name)
    except LlmUnavailable:
        known = ", ".join(profile_names())
        raise EvaluationRefused(f"no model profile called {name!r} (there are: {known})") from None
    if collection.sensitive and profile is not None and not profile.is_local:
        raise EvaluationRefused(
            f"{collection.slug} is sensitive: only local models answer over it, and "
            f"{name} is not local"
        )


def evaluation_start(
    *,
    collection: Collection,
    user: Any,
    profiles: list[str],
    actor: Principal | Actor,
    golden: list[GoldenItem] | None = None,
    background: bool = False,
) -> list[EvaluationRun]:
    """A queued run per profile (none given: the collection's own), over `golden` or
    else the collection's golden set as it is now, asked as `user`; audited.
    `background`: each run is handed to the worker once this commits. Raises
    EvaluationRefused."""
    if golden is None:
        golden = [
            GoldenItem(g.question, g.answer, tuple(g.documents))
            for g in collection.golden_questions.exclude(answer="")
        ]
    if not golden:
        raise EvaluationRefused(
            f"the golden set of {collection.slug} has no question with an answer expected: "
            "add questions, or write the answers of those from answers marked not helpful"
        )
    own = collection.model_profile.name if collection.model_profile else services.DEFAULT_PROFILE
    names = list(dict.fromkeys(profiles)) or [own]
    for name in names:
        _profile_check(collection, name)
    batch = uuid.uuid4().hex
    with transaction.atomic():
        runs = [
            EvaluationRun.objects.create(
                collection=collection,
                batch=batch,
                profile=name,
                user=user,
                started_by=Actor.of(actor).name if isinstance(actor, Principal) else actor.name,
                golden=[
                    {"question": g.question, "answer": g.answer, "documents": list(g.documents)}
                    for g in golden
                ],
            )
            for name in names
        ]
        audit_record(
            action="evaluation.start",
            actor=actor,
            collections=[collection.slug],
            detail={
                "batch": batch,
                "runs": {r.profile: r.pk for r in runs},
                "questions": len(golden),
            },
        )
        if background:
            for run in runs:
                _enqueue_on_commit(run.pk)
    return runs


def _enqueue_on_commit(run_id: int) -> None:
    from retrieval.tasks import evaluation_run_task  # which imports this module

    transaction.on_commit(lambda: evaluation_run_task.delay(run_id))


def evaluation_run(*, run_id: int) -> None:
    """Asks the run's questions, saving each row as it comes. A run that is not queued
    (done, or taken by another worker) is left alone; one that breaks is marked failed;
    one given up meanwhile (evaluations_reconcile) is asked no further."""
    if not EvaluationRun.objects.filter(pk=run_id, status=RunStatus.QUEUED).update(
        status=RunStatus.RUNNING, updated_at=timezone.now()
    ):
        return
    run = EvaluationRun.objects.select_related("collection", "user").get(pk=run_id)
    try:
        _ask_all(run)
    except BaseException as error:
        now = timezone.now()
        _held(run).update(
            status=RunStatus.FAILED,
            error=f"{type(error).__name__}: {error}",
            finished_at=now,
            updated_at=now,
        )
        raise


def _held(run: EvaluationRun) -> QuerySet[EvaluationRun]:
    """The run while it is still this worker's: each write goes through it, so that a run
    given up as interrupted stays so."""
    return EvaluationRun.objects.filter(pk=run.pk, status=RunStatus.RUNNING)


def evaluations_interrupt() -> int:
    """Marks failed the runs a previous owner of the embedded default left unfinished
    (its worker was their only one; the answers so far are kept), and says how many. Not
    queued again: a run is minutes of model time, for its owner to start again."""
    return EvaluationRun.objects.filter(status__in=(RunStatus.QUEUED, RunStatus.RUNNING)).update(
        status=RunStatus.FAILED,
        error="interrupted: kb stopped before the run finished",
        finished_at=timezone.now(),
    )


def evaluations_reconcile(*, stale_after: timedelta) -> int:
    """Production's periodic check (beat), and says how many runs it gave up. A run that
    has not moved for `stale_after` while running lost its worker (stopped, or killed
    mid-run: its message, if delivered again, finds the run taken): it is marked failed,
    its answers so far kept. A queued one whose message was lost is queued again (a
    duplicate finds it taken)."""
    now = timezone.now()
    stale = EvaluationRun.objects.filter(updated_at__lt=now - stale_after)
    interrupted = list(stale.filter(status=RunStatus.RUNNING).values_list("pk", flat=True))
    EvaluationRun.objects.filter(pk__in=interrupted, status=RunStatus.RUNNING).update(
        status=RunStatus.FAILED,
        error="interrupted: its worker stopped",
        finished_at=now,
        updated_at=now,
    )
    if interrupted:
        logger.warning("evaluation runs %s were interrupted: their worker stopped", interrupted)
    for run_id in stale.filter(status=RunStatus.QUEUED).values_list("pk", flat=True):
        EvaluationRun.objects.filter(pk=run_id).update(updated_at=now)
        _enqueue_on_commit(run_id)
    return len(interrupted)


def _ask_all(run: EvaluationRun) -> None:
    if run.user is None:
        run.error = "the user who started the run is gone"
    else:
        _ask_each(run, Principal(user=run.user))
    now = timezone.now()
    _held(run).update(
        metrics=evaluation_summary(run.rows),
        status=RunStatus.FAILED if run.error else RunStatus.DONE,
        error=run.error,
        finished_at=now,
        updated_at=now,
    )


def _ask_each(run: EvaluationRun, principal: Principal) -> None:
    documents = documents_by_name(run.collection)
    for item in run.golden:
        try:
            row = _ask(run, principal, item, documents)
        except Http404:
            run.error = f"{principal.user.get_username()} can no longer read {run.collection.slug}"
            return  # and neither the questions after it
        except usage.BudgetExceeded as spent:
            run.error = str(spent)
            return
        run.rows = [*run.rows, row]
        run.model = run.model or row.get("model", "")
        if not _held(run).update(rows=run.rows, model=run.model, updated_at=timezone.now()):
            return  # given up as interrupted: asking on would only spend the model's time


def _ask(
    run: EvaluationRun, principal: Principal, item: dict[str, Any], documents: dict[str, int]
) -> dict[str, Any]:
    expected = {documents[d] for d in item["documents"] if d in documents}
    row: dict[str, Any] = {
        "question": item["question"],
        "expected": item["answer"],
        "documents": item["documents"],
    }
    try:
        answer = services.question_answer(
            principal=principal,
            question=item["question"],
            collections=[run.collection.slug],
            profile=run.profile,
            evaluation=run.pk,
        )
    except services.QuestionTooLong as error:
        return row | {"error": str(error)}
    row |= {"query_id": answer.query_id, "model": answer.model}
    try:
        observed = scoring.answer_observe(answer)
    except LlmUnavailable as error:
        return row | {"error": str(error)}
    cited = observed.documents_cited
    score = 0.0 if observed.refused else scoring.agreement(observed.answer, item["answer"])
    return (
        row
        | observed.as_row()
        | {
            "answer": observed.answer,
            "hit": bool(expected & observed.documents_sent) if item["documents"] else None,
            "cited": len(cited),
            "cited_expected": sum(1 for d in cited if d in expected),
            "agreement": round(score, 3),
            "agrees": score >= scoring.AGREEMENT_THRESHOLD,
        }
    )


def evaluation_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's numbers (see the module's docstring); None where nothing was measured."""
    asked = [r for r in rows if not r.get("error")]
    named = [r for r in asked if r["hit"] is not None]
    cited = [r for r in named if not r["refused"]]
    cited_total = sum(r["cited"] for r in cited)
    return {
        "questions": len(rows),
        "errors": len(rows) - len(asked),
        "hit_rate": scoring.share(named, "hit") if named else None,
        "citation_precision": sum(r["cited_expected"] for r in cited) / cited_total
        if cited_total
        else None,
        "refused": scoring.share(asked, "refused") if asked else None,
        "agreement": scoring.share(asked, "agrees") if asked else None,
        "agreement_score": statistics.mean(r["agreement"] for r in asked) if asked else None,
        **scoring.speed(asked),
        "prompt_tokens": statistics.mean(r["prompt_tokens"] for r in asked) if asked else None,
        "completion_tokens": statistics.mean(r["completion_tokens"] for r in asked)
        if asked
        else None,
    }


@dataclass
class Batch:
    """Runs started together, one a profile: shown side by side."""

    batch: str
    created_at: Any
    started_by: str
    runs: list[EvaluationRun]

    @property
    def finished(self) -> bool:
        return all(r.status in (RunStatus.DONE, RunStatus.FAILED) for r in self.runs)


def evaluation_batches(collection: Collection, *, limit: int = 20) -> list[Batch]:
    """The newest `limit` batches of the collection's runs, newest first."""
    batches: dict[str, Batch] = {}
    for run in collection.evaluation_runs.order_by("-pk"):
        if run.batch not in batches:
            if len(batches) == limit:
                break
            batches[run.batch] = Batch(run.batch, run.created_at, run.started_by, [])
        batches[run.batch].runs.insert(0, run)  # in the order they were asked for
    return list(batches.values())
