"""Retention runs: the question and answer texts whose collections' retention has passed
(kb.retention) are erased from the audit trail and from conversations, and one audit
row says how many, under which cutoffs. Run periodically (Celery beat, or the embedded
server's own thread) and by `manage.py retention_expire`."""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.db.models import Min
from django.utils import timezone

from kb.audit import SYSTEM, Actor, audit_record, in_batches, one_writer
from kb.models import AuditEvent
from kb.principal import Principal
from kb.retention import EXPIRE_ACTION, Cutoffs, row_collections
from retrieval.models import Conversation, Exchange, Feedback

EXPIRED_QUESTION = (
    "This question and its answer expired on {date}: their collection keeps texts for a "
    "limited time."
)
EXPIRED_TITLE = "Expired conversation"
BATCH = 1000


@dataclass(frozen=True)
class Expired:
    audit_rows: int
    exchanges: int


def _batches(ids: Sequence[int]) -> Iterator[Sequence[int]]:
    for start in range(0, len(ids), BATCH):
        yield ids[start : start + BATCH]


def retention_expire(*, actor: Actor | Principal = SYSTEM) -> Expired:
    """Erase the texts let go by now; a run that finds some writes one `retention.expire`
    audit row, which the erased rows name (kb.audit verifies them against it)."""
    now = timezone.now()
    cutoffs = Cutoffs.at(now)
    latest = cutoffs.latest
    if latest is None:
        return Expired(0, 0)  # every collection keeps its texts
    touched: set[str] = set()
    rows = []
    candidates = AuditEvent.objects.exclude(texts_hash="").filter(
        texts_expired_by__isnull=True, created_at__lt=latest
    )
    for event in in_batches(candidates.only("seq", "created_at", "collections", "detail")):
        if cutoffs.lets_go(slugs := row_collections(event), event.created_at):
            rows.append(event.pk)
            touched.update(slugs)
    exchanges = []
    unexpired = Exchange.objects.filter(expired_at__isnull=True, created_at__lt=latest)
    for pk, created_at, collections in unexpired.values_list(
        "pk", "created_at", "collections"
    ).iterator():
        if cutoffs.lets_go(slugs := collections.split(), created_at):
            exchanges.append(pk)
            touched.update(slugs)
    if not rows and not exchanges:
        return Expired(0, 0)
    with one_writer(), transaction.atomic():
        run = audit_record(
            action=EXPIRE_ACTION,
            actor=actor,
            collections=touched,
            detail={**cutoffs.as_detail(), "audit_rows": len(rows), "exchanges": len(exchanges)},
        )
        for batch in _batches(rows):
            AuditEvent.objects.filter(pk__in=batch).texts_erase(by=run.seq)
        for batch in _batches(exchanges):
            _exchanges_expire(batch, now)
    return Expired(len(rows), len(exchanges))


def _exchanges_expire(ids: Sequence[int], now: datetime) -> None:
    # A conversation's title is its first question: it goes with it.
    titled = Conversation.objects.annotate(first=Min("exchanges__pk")).filter(first__in=ids)
    Conversation.objects.filter(pk__in=list(titled.values_list("pk", flat=True))).update(
        title=EXPIRED_TITLE
    )
    Feedback.objects.filter(exchange_id__in=ids).update(comment="")
    Exchange.objects.filter(pk__in=ids).update(
        question=EXPIRED_QUESTION.format(date=now.date().isoformat()),
        answer="",
        error="",
        citations=[],
        expired_at=now,
    )
