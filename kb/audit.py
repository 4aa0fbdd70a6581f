"""The audit trail: append-only rows, each hash-chained to the one before.

`audit_record` is called by the service that does the action, inside its transaction,
so an action whose row cannot be written does not happen. Each row's hash is keyed, and
the newest head is kept outside the database too (kb.audit_anchor). `audit_verify` walks
the chain from the last prune checkpoint, names the first row that does not fit, and
requires the chain to reach the head kept outside.

Texts that may expire (kb.retention). A row written with question or answer texts
(`texts_of`: a few columns, and a feedback comment in its detail) holds `texts_hash`, a
keyed digest of those texts and its seq, and its row hash covers that digest in their
place. While the texts are there, `audit_verify` checks them against the digest; a
retention run may erase them (`texts_erase`) and marks the row with its own row's seq
(`texts_expired_by`). An erased row verifies only when that run's row, itself in the
chain, names cutoffs under which the row's collections let its texts go: erasing texts
outside a run, or of a row on hold or too young, shows, and so does any edit of what
remains. The digest is keyed and salted with the seq, so it confirms no guess at an
erased text without the key. Rows written before `texts_hash` existed hash their texts
directly: erasing them would break the chain, so they keep their texts until
`audit_prune` removes them whole.
"""

import csv
import hashlib
import hmac
import io
import json
import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db import connection, transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from kb import request_context
from kb.audit_anchor import Head, audit_key, head_advance, head_path, head_read
from kb.models import (
    AUDIT_TEXT_DETAIL_KEYS,
    AUDIT_TEXT_FIELDS,
    AuditChainHead,
    AuditCheckpoint,
    AuditEvent,
    Outcome,
)
from kb.principal import Principal
from kb.retention import EXPIRE_ACTION, Cutoffs, row_collections

GENESIS = "0" * 64
# The first format's columns: every row's hash covers each of them, and the list never
# changes (a row verifies only against the fields it was hashed with).
HASHED_FIELDS = (
    "seq",
    "created_at",
    "action",
    "outcome",
    "actor_type",
    "actor_id",
    "actor_name",
    "token_prefix",
    "collections",
    "client_ip",
    "user_agent",
    "request_id",
    "latency_ms",
    "query",
    "chunk_ids",
    "cited_chunk_ids",
    "model",
    "answer",
    "detail",
    "prev_hash",
)
# A column added later goes here with its default, never into HASHED_FIELDS: it enters
# a row's hash only where it holds something else than its default. Rows written before
# it existed hold the default, so they still verify; a value written, edited or erased
# later changes the hash. Each column is exported too.
LATER_FIELDS: dict[str, Any] = {
    "rewritten_query": "",  # a follow-up made standalone: what was searched instead
    "texts_hash": "",  # the digest of texts_of() that the hash covers in their place
}


@dataclass(frozen=True)
class Actor:
    """Who did it, copied into the row as plain values."""

    type: str
    id: int | None
    name: str
    token_prefix: str = ""

    @classmethod
    def of(cls, principal: Principal) -> "Actor":
        token = principal.token
        return cls(
            type=principal.actor_type,
            id=principal.user.pk,
            name=principal.user.get_username(),
            token_prefix=token.prefix if token else "",
        )


SYSTEM = Actor(type="system", id=None, name="system")


def anonymous(name: str = "") -> Actor:
    return Actor(type="anonymous", id=None, name=name[:150])


def _canonical(values: dict[str, Any]) -> bytes:
    return json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _row_values(event: AuditEvent) -> dict[str, Any]:
    values = {name: getattr(event, name) for name in (*HASHED_FIELDS, *LATER_FIELDS)}
    values["created_at"] = event.created_at.astimezone(UTC).isoformat()
    return values


def texts_of(event: AuditEvent) -> dict[str, str]:
    """The texts a retention run may erase; a row with `texts_hash` is hashed without them."""
    texts = {name: getattr(event, name) for name in AUDIT_TEXT_FIELDS}
    detail = event.detail if isinstance(event.detail, dict) else {}
    return texts | {f"detail.{key}": detail.get(key, "") for key in AUDIT_TEXT_DETAIL_KEYS}


def texts_digest(event: AuditEvent, key: bytes) -> str:
    """Keyed, and salted with the seq: without the key it confirms no guess at a text,
    and two rows asking the same do not show it."""
    texts = {"seq": event.seq, **texts_of(event)}
    return hmac.new(key, b"texts\n" + _canonical(texts), hashlib.sha256).hexdigest()


def row_hash(event: AuditEvent, key: bytes | None) -> str:
    """HMAC-SHA256 under the audit key; plain SHA-256 (`key` None) for the rows that a kb
    before keyed hashes wrote."""
    values = _row_values(event)
    for name, default in LATER_FIELDS.items():
        if values[name] == default:
            del values[name]
    if "texts_hash" in values:
        for name in AUDIT_TEXT_FIELDS:
            values.pop(name, None)
        if isinstance(detail := values["detail"], dict):
            values["detail"] = {k: v for k, v in detail.items() if k not in AUDIT_TEXT_DETAIL_KEYS}
    if key is None:
        return hashlib.sha256(_canonical(values)).hexdigest()
    return hmac.new(key, _canonical(values), hashlib.sha256).hexdigest()


def _last_prune() -> tuple[int, str] | None:
    checkpoint = AuditCheckpoint.objects.order_by("-seq").first()
    return (checkpoint.seq, checkpoint.hash) if checkpoint else None


def _anchor(*, seq: int, hash: str, pruned: tuple[int, str] | None = None) -> None:
    # The first head kept outside takes over the last prune before it.
    head_advance(seq=seq, hash=hash, pruned=pruned, pruned_before=_last_prune)


# SQLite admits one writer at a time, and a thread that finds it busy sleeps in steps of
# up to 100 ms before it tries again. The writers of this process (the embedded default
# has one) queue on a lock instead, which hands over at once.
_sqlite_writer = threading.Lock()


@contextmanager
def one_writer() -> Iterator[None]:
    if connection.vendor != "sqlite" or connection.in_atomic_block:
        yield  # a transaction that is already open holds SQLite's lock already
        return
    with _sqlite_writer:
        yield


def _storable(value: Any) -> Any:
    """`value` with each NUL character replaced: PostgreSQL's text and JSON refuse NUL,
    and a hostile query must still get its row (and its hash covers what is stored)."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_storable(k): _storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_storable(v) for v in value]
    return value


# The chain's head row, in SQL of its own: it is read and moved for every row, and the
# ORM's building of the two statements took a third of a row's CPU.
def _head_take() -> tuple[int, str]:
    """The head's seq and hash, locked until the transaction ends."""
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT seq, hash FROM {_head_table()} WHERE id = 1{lock}")  # noqa: S608
        row = cursor.fetchone()
    if row is None:  # no row can be chained, so the action must not happen
        raise AuditChainHead.DoesNotExist("The audit trail's head row is missing.")
    seq, hash = row
    return seq, hash


def _head_move(seq: int, hash: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {_head_table()} SET seq = %s, hash = %s WHERE id = 1",  # noqa: S608
            [seq, hash],
        )


def _head_table() -> str:
    return connection.ops.quote_name(AuditChainHead._meta.db_table)


def audit_record(
    *,
    action: str,
    actor: Actor | Principal,
    outcome: str = Outcome.OK,
    collections: Iterable[str] = (),
    latency_ms: int | None = None,
    query: str = "",
    chunk_ids: Sequence[int] = (),
    cited_chunk_ids: Sequence[int] = (),
    model: str = "",
    answer: str = "",
    detail: dict[str, Any] | None = None,
    rewritten_query: str = "",
) -> AuditEvent:
    """Append one row. Raises if it cannot be written, which fails the caller's action."""
    if isinstance(actor, Principal):
        actor = Actor.of(actor)
    info = request_context.current()
    with one_writer(), transaction.atomic():
        # Taking the head row's lock first serialises writers: FOR UPDATE on PostgreSQL;
        # SQLite's transactions begin IMMEDIATE (settings), with its one writer's lock.
        seq, prev_hash = _head_take()
        event = AuditEvent(
            seq=seq + 1,
            # Microseconds survive every database; the hash depends on them.
            created_at=timezone.now(),
            action=action,
            outcome=str(outcome),
            actor_type=actor.type,
            actor_id=actor.id,
            actor_name=_storable(actor.name),
            token_prefix=actor.token_prefix,
            collections=" ".join(sorted(set(collections))),
            client_ip=info.client_ip,
            user_agent=_storable(info.user_agent),
            request_id=info.request_id,
            latency_ms=latency_ms,
            query=_storable(query),
            chunk_ids=list(chunk_ids),
            cited_chunk_ids=list(cited_chunk_ids),
            model=model,
            answer=_storable(answer),
            detail=_storable(detail or {}),
            prev_hash=prev_hash,
            rewritten_query=_storable(rewritten_query),
        )
        key = audit_key()
        if any(texts_of(event).values()):
            event.texts_hash = texts_digest(event, key)
        event.hash = row_hash(event, key)
        event.save(force_insert=True)
        _head_move(event.seq, event.hash)
        # After the commit: a row that is rolled back never reaches the head outside.
        transaction.on_commit(lambda: _anchor(seq=event.seq, hash=event.hash))
    return event


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    checked: int
    message: str


def audit_verify() -> VerifyResult:
    """Walk the chain from the newest checkpoint (or the start) to the head, and check
    it against what is kept outside the database: the key and the head."""
    anchor = head_read()
    checkpoint = AuditCheckpoint.objects.order_by("-seq").first()
    expected_seq, expected_prev = (
        (checkpoint.seq + 1, checkpoint.hash) if checkpoint else (1, GENESIS)
    )
    if anchor and (anchor.pruned_seq, anchor.pruned_hash) != (
        (checkpoint.seq, checkpoint.hash) if checkpoint else (0, "")
    ):
        return VerifyResult(
            False,
            0,
            f"the prune checkpoint in the database (seq {expected_seq - 1}) is not the one "
            f"kept outside it (seq {anchor.pruned_seq}, {head_path()}): rows were deleted",
        )
    key = audit_key()
    keyed_from = anchor.keyed_from if anchor else 1
    runs = {
        run.seq: Cutoffs.of_detail(run.detail)
        for run in AuditEvent.objects.filter(action=EXPIRE_ACTION, seq__gte=expected_seq)
    }  # their own rows are checked as the walk reaches them
    checked = 0
    for event in AuditEvent.objects.filter(seq__gte=expected_seq).order_by("seq").iterator():
        if event.seq != expected_seq:
            return VerifyResult(
                False,
                checked,
                f"row seq {expected_seq} is missing (next row is seq {event.seq}, id {event.pk}): "
                "rows were deleted",
            )
        if event.prev_hash != expected_prev:
            return VerifyResult(
                False,
                checked,
                f"row seq {event.seq} (id {event.pk}) does not follow the row before it: "
                "rows were deleted, inserted or re-ordered",
            )
        hashes = {row_hash(event, key)}
        if event.seq < keyed_from:
            hashes.add(row_hash(event, None))
        if event.hash not in hashes:
            return VerifyResult(
                False,
                checked,
                f"row seq {event.seq} (id {event.pk}) was edited after it was written",
            )
        if problem := _texts_problem(event, key, runs):
            return VerifyResult(False, checked, problem)
        if anchor and event.seq == anchor.seq and event.hash != anchor.hash:
            return VerifyResult(
                False,
                checked,
                f"row seq {event.seq} (id {event.pk}) is not the row the head kept outside "
                f"the database names ({head_path()}): the chain was rewritten",
            )
        checked += 1
        expected_seq, expected_prev = event.seq + 1, event.hash
    last = expected_seq - 1
    head = AuditChainHead.objects.get(pk=1)
    if head.seq != last or head.hash != expected_prev:
        return VerifyResult(
            False,
            checked,
            f"the chain ends at seq {last} but {head.seq} rows were written: "
            "the newest rows were deleted",
        )
    if problem := _beyond_anchor(anchor, last):
        return VerifyResult(False, checked, problem)
    return VerifyResult(True, checked, f"audit chain intact: {checked} rows verified")


def _texts_problem(event: AuditEvent, key: bytes, runs: dict[int, Cutoffs]) -> str:
    """Why the texts of a row hashed through `texts_hash` do not fit it ("" if they do)."""
    if not event.texts_hash:
        return ""
    where = f"row seq {event.seq} (id {event.pk})"
    if event.texts_expired_by is None:
        if texts_digest(event, key) != event.texts_hash:
            return (
                f"{where} was edited after it was written: its question or answer texts "
                "do not match their digest"
            )
        return ""
    run = runs.get(event.texts_expired_by)
    if any(texts_of(event).values()) or not (
        run is not None
        and event.seq < event.texts_expired_by
        and run.lets_go(row_collections(event), event.created_at)
    ):
        return (
            f"{where} had its texts erased, and the retention run it names (seq "
            f"{event.texts_expired_by}) did not let them go"
        )
    return ""


def _beyond_anchor(anchor: Head | None, last: int) -> str:
    if anchor is None:
        if last == 0:
            return ""  # nothing written yet
        return (
            f"the chain's head kept outside the database ({head_path()}) is missing: the "
            "newest rows cannot be confirmed"
        )
    if anchor.seq > last:
        return (
            f"the chain ends at seq {last} but the head kept outside the database is at seq "
            f"{anchor.seq} ({head_path()}): the newest rows were deleted"
        )
    return ""


def audit_filter(
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    user: str | None = None,
    collection: str | None = None,
    action: str | None = None,
    outcome: str | None = None,
    within: Sequence[str] | None = None,
) -> QuerySet[AuditEvent]:
    """`within`: only rows naming one of these collections (a token's)."""
    events = AuditEvent.objects.all()
    if within is not None:
        if not within:
            return events.none()
        names = "|".join(re.escape(slug) for slug in within)
        events = events.filter(collections__regex=rf"(^| )({names})( |$)")
    if since:
        events = events.filter(created_at__gte=since)
    if until:
        events = events.filter(created_at__lt=until)
    if user:
        events = events.filter(actor_name=user)
    if collection:
        events = events.filter(collections__regex=rf"(^| ){re.escape(collection)}( |$)")
    if action:
        events = events.filter(action=action)
    if outcome:
        events = events.filter(outcome=outcome)
    return events.order_by("seq")


def in_batches(events: QuerySet[AuditEvent], size: int = 1000) -> Iterator[AuditEvent]:
    """The rows of `events` (ordered by seq), read `size` at a time: a million rows never
    sit in memory, and each read is its own query, from whichever thread streams them."""
    last = 0
    while rows := list(events.filter(seq__gt=last)[:size]):
        yield from rows
        last = rows[-1].seq


def export_fields() -> tuple[str, ...]:
    return ("id", *HASHED_FIELDS, *LATER_FIELDS, "hash", "texts_expired_by")


def export_dict(event: AuditEvent) -> dict[str, Any]:
    values = _row_values(event)
    values["id"] = event.pk
    values["hash"] = event.hash
    values["texts_expired_by"] = event.texts_expired_by
    return {name: values[name] for name in export_fields()}


def export_jsonl(events: Iterable[AuditEvent]) -> Iterator[str]:
    for event in events:
        yield json.dumps(export_dict(event), ensure_ascii=False) + "\n"


def export_csv(events: Iterable[AuditEvent]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=export_fields())
    writer.writeheader()
    for event in events:
        row = export_dict(event)
        for key in ("chunk_ids", "cited_chunk_ids", "detail"):
            row[key] = json.dumps(row[key])
        writer.writerow(row)
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    if buffer.getvalue():
        yield buffer.getvalue()


def audit_prune(*, before: datetime, actor: Actor | Principal) -> int:
    """Remove rows older than `before`, keep a checkpoint so the rest still verifies."""
    with transaction.atomic():
        AuditChainHead.objects.filter(pk=1).update(seq=F("seq"))  # lock out writers
        old = AuditEvent.objects.filter(created_at__lt=before).order_by("-seq")
        last = old.first()
        if last is None:
            removed = 0
        else:
            # Rows are cut at a seq, never in the middle of the chain.
            doomed = AuditEvent.objects.filter(seq__lte=last.seq)
            removed = doomed.count()
            AuditCheckpoint.objects.create(
                seq=last.seq, hash=last.hash, pruned_rows=removed, before=before
            )
            doomed.prune()
        event = audit_record(
            action="audit.prune",
            actor=actor,
            detail={"before": before.isoformat(), "removed": removed},
        )
        if last is not None:
            cut = (last.seq, last.hash)
            transaction.on_commit(lambda: _anchor(seq=event.seq, hash=event.hash, pruned=cut))
    return removed
