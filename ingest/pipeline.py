"""The pipeline: what happens to a stored version, stage by stage, until it is live.

Each stage is a small idempotent step guarded by compare-and-set on the version's
stage, so a repeated or stale message does nothing harmful. The database is the
source of truth; `ingest_reconcile` re-queues work whose message was lost.

This module and ingest.tasks import each other, as in HackSoft's styleguide: a task
calls one function here, and a stage queues the next task (imported where it is sent,
since the tasks module imports this one at its top).
"""

import logging
import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from ingest import cpu, embedder, sparse, storage, term_stats
from ingest.extract import Extracted, Limits
from ingest.filetypes import UnsupportedFile, detect
from ingest.isolated import Job, Stopped, extract_batch_isolated
from ingest.models import ACTIVE_STAGES, Chunk, Document, DocumentVersion, Progress, Stage
from ingest.parsing import ParseError
from ingest.vectors import Point, point_payload, vector_store
from kb import metrics

logger = logging.getLogger(__name__)
POINT_NAMESPACE = uuid.UUID("6c1f0d8e-3b8a-4c53-9d1e-5b0f5f7a2b10")


def point_id(version_id: int, index: int) -> str:
    """Deterministic, so a repeated embedding stage overwrites instead of duplicating."""
    return str(uuid.uuid5(POINT_NAMESPACE, f"{version_id}:{index}"))


def enqueue_parse(version_id: int) -> None:
    from ingest.tasks import version_parse_task

    version_parse_task.delay(version_id)


def enqueue_parse_many(version_ids: list[int]) -> None:
    """One message for the versions of one upload batch (services.UPLOAD_BATCH)."""
    if len(version_ids) == 1:
        enqueue_parse(version_ids[0])
        return
    from ingest.tasks import versions_parse_task

    versions_parse_task.delay(version_ids)


def enqueue_embed(version_id: int) -> None:
    from ingest.tasks import version_embed_task

    version_embed_task.delay(version_id)


def enqueue_embed_many(version_ids: list[int]) -> None:
    from ingest.tasks import versions_embed_task

    versions_embed_task.delay(version_ids)


def _advance(version_id: int, from_stage: Stage, to_stage: Stage, **fields: object) -> bool:
    changed = DocumentVersion.objects.filter(pk=version_id, stage=from_stage).update(
        stage=to_stage, updated_at=timezone.now(), **fields
    )
    return changed == 1


def version_fail(version_id: int, message: str) -> None:
    DocumentVersion.objects.filter(pk=version_id, stage__in=ACTIVE_STAGES).update(
        stage=Stage.FAILED, error=message[:2000], updated_at=timezone.now()
    )
    logger.info("version %s failed: %s", version_id, message)


# Files this small are parsed PARSE_BATCH at a time, in one message to the parse child,
# and their passages written in one transaction: for a one-paragraph file the child's
# round trip and the stage writes took longer than the parse (bench/ingest_many.py).
PARSE_BATCH = 32
PARSE_BATCH_BYTES = 256 * 1024


def version_parse(*, version_id: int) -> None:
    """queued -> parsing -> chunking -> embedding: passages into the database. A small
    version takes other small ones waiting in the queue along (claimed as it is); one
    tried before goes alone, so a file that stops the child holds up a batch once."""
    # In a run of small files most messages find their version already taken along in
    # another's batch: a read says so without queueing for the database's write lock.
    if not DocumentVersion.objects.filter(pk=version_id, stage=Stage.QUEUED).exists():
        return
    if not _advance(version_id, Stage.QUEUED, Stage.PARSING, attempts=F("attempts") + 1):
        return
    versions = list(DocumentVersion.objects.select_related("document").filter(pk=version_id))
    if versions and versions[0].size <= PARSE_BATCH_BYTES and versions[0].attempts == 1:
        versions += _claim_parse_companions(version_id)
    _parse(versions)


def versions_parse(*, version_ids: list[int]) -> None:
    """The versions of one upload batch that are still queued (a repeated message finds
    them taken), parsed as version_parse parses a version and its companions: small ones
    together, any other alone."""
    claimed = _claim_for_parse(Q(pk__in=version_ids))
    together = [v for v in claimed if v.size <= PARSE_BATCH_BYTES and v.attempts == 1]
    for version in claimed:
        if version not in together:
            _parse([version])
    for start in range(0, len(together), PARSE_BATCH):
        _parse(together[start : start + PARSE_BATCH])


def _claim_parse_companions(version_id: int) -> list[DocumentVersion]:
    small = Q(size__lte=PARSE_BATCH_BYTES, attempts=0) & ~Q(pk=version_id)
    return _claim_for_parse(small, limit=PARSE_BATCH - 1)


def _claim_for_parse(which: Q, limit: int | None = None) -> list[DocumentVersion]:
    """Queued versions moved on to parsing, compare-and-set as for a version alone:
    locked rows (another worker's claim under way) are skipped on PostgreSQL; SQLite has
    one writer at a time."""
    with transaction.atomic():
        ids = list(
            DocumentVersion.objects.select_for_update(skip_locked=True)
            .filter(which, stage=Stage.QUEUED)
            .order_by("pk")
            .values_list("pk", flat=True)[:limit]
        )
        DocumentVersion.objects.filter(pk__in=ids, stage=Stage.QUEUED).update(
            stage=Stage.PARSING, attempts=F("attempts") + 1, updated_at=timezone.now()
        )
    return list(DocumentVersion.objects.select_related("document").filter(pk__in=ids))


def _parse(versions: list[DocumentVersion]) -> None:
    """Claimed versions (in the parsing stage) parsed and chunked in this thread's parse
    child, one message for all; each fails or succeeds on its own."""
    jobs: list[Job] = []
    claimed: list[DocumentVersion] = []
    for version in versions:
        try:
            kind = detect(storage.path_for(version.sha256), version.filename)
        except UnsupportedFile as error:
            version_fail(version.pk, str(error))
            continue
        except FileNotFoundError:
            version_fail(version.pk, "the stored file is missing; upload it again")
            continue
        path = storage.path_for(version.sha256)
        jobs.append(Job(str(path), kind.extension, version.document.title))
        claimed.append(version)
    if not claimed:
        return
    limits = Limits(max_elements=settings.KB_MAX_ELEMENTS, max_passages=settings.KB_MAX_PASSAGES)
    steps = metrics.IngestSteps()
    pages: dict[int, int | None] = {}

    def parsed(index: int, count: int | None) -> None:
        steps.done("parse")
        pages[claimed[index].pk] = count
        if len(claimed) == 1:  # a file of its own may take a while to chunk: say so
            _advance(
                claimed[index].pk,
                Stage.PARSING,
                Stage.CHUNKING,
                pages=count,
                progress=Progress.PARSED,
            )

    with cpu.parse_running():
        outcomes = extract_batch_isolated(jobs, limits=limits, parsed=parsed)
    steps.done("chunk")
    extracted: dict[DocumentVersion, Extracted] = {}
    untried: list[DocumentVersion] = []
    for version, outcome in zip(claimed, outcomes, strict=True):
        if isinstance(outcome, Extracted):
            extracted[version] = outcome
        elif isinstance(outcome, ParseError):
            version_fail(version.pk, str(outcome))
        elif isinstance(outcome, RuntimeError):
            version_fail(version.pk, f"processing failed: RuntimeError: {outcome}")
        elif isinstance(outcome, Stopped):
            _parse_stopped(version.pk, attempts=version.attempts, reason=str(outcome))
        else:
            untried.append(version)
    _chunks_write(extracted, pages)
    if untried:
        # After a file that stopped the child: a new child takes the rest.
        _parse(untried)


def _chunks_write(
    extracted: dict[DocumentVersion, Extracted], pages: dict[int, int | None]
) -> None:
    """The passages of these versions, and each version on to embedding, in one
    transaction; then one message embeds them all."""
    if not extracted:
        return
    with transaction.atomic():
        moved = [
            version
            for version, result in extracted.items()
            if DocumentVersion.objects.filter(
                pk=version.pk, stage__in=(Stage.PARSING, Stage.CHUNKING)
            ).update(
                stage=Stage.EMBEDDING,
                pages=pages.get(version.pk, result.pages),
                chunk_count=len(result.passages),
                progress=Progress.CHUNKED,
                updated_at=timezone.now(),
            )
        ]  # the others were deleted or reset meanwhile: their passages are not wanted
        ids = [version.pk for version in moved]
        # A repeat after a crash replaces what the first attempt wrote.
        Chunk.objects.filter(version_id__in=ids).delete()
        Chunk.objects.bulk_create(
            [
                Chunk(
                    version_id=version.pk,
                    document_id=version.document_id,
                    collection_id=version.document.collection_id,
                    index=index,
                    text=passage.text,
                    context=passage.context[:1000],
                    page=passage.page,
                    section=passage.section[:500],
                    element_type=passage.element_type,
                    token_count=passage.token_count,
                    point_id=point_id(version.pk, index),
                )
                for version in moved
                for index, passage in enumerate(extracted[version].passages)
            ],
            batch_size=500,
        )
        if len(ids) == 1:
            transaction.on_commit(lambda: enqueue_embed(ids[0]))
        elif ids:
            transaction.on_commit(lambda: enqueue_embed_many(ids))


def _parse_stopped(version_id: int, *, attempts: int, reason: str) -> None:
    """Out of memory or time, or killed: tried again later, KB_PARSE_ATTEMPTS in all."""
    if attempts >= settings.KB_PARSE_ATTEMPTS:
        version_fail(version_id, reason)
        return
    logger.warning("version %s: %s; it goes back to the queue", version_id, reason)
    moved = DocumentVersion.objects.filter(
        pk=version_id, stage__in=(Stage.PARSING, Stage.CHUNKING)
    ).update(stage=Stage.QUEUED, updated_at=timezone.now())
    if moved:
        transaction.on_commit(lambda: enqueue_parse(version_id))


# Passages per embedding call. The embedder sorts a call's passages by length, so long
# calls pad little: parts of 512 embed 10% faster than parts of 64, and small documents
# embedded together 20% faster than one by one (bench/README.md).
EMBED_PART = 512


def _claimable() -> Q:
    return Q(claimed_until__isnull=True) | Q(claimed_until__lt=timezone.now())


def _lease() -> datetime:
    return timezone.now() + timedelta(seconds=settings.KB_STALE_AFTER_SECONDS)


def _claim(version_id: int) -> bool:
    """Compare-and-set: this task holds the version until it is done or the lease ends."""
    claimed = DocumentVersion.objects.filter(
        _claimable(), pk=version_id, stage=Stage.EMBEDDING
    ).update(claimed_until=_lease(), updated_at=timezone.now())
    return claimed == 1


def _claim_companions(claimed: list[int]) -> list[int]:
    """Other small versions waiting to be embedded, claimed (compare-and-set, in one
    transaction), while the passages fit in one EMBED_PART with those already claimed."""
    room = EMBED_PART - sum(
        DocumentVersion.objects.filter(pk__in=claimed).values_list("chunk_count", flat=True)
    )
    if room <= 0:
        return []
    with transaction.atomic():
        waiting = (
            DocumentVersion.objects.select_for_update(skip_locked=True)
            .filter(_claimable(), stage=Stage.EMBEDDING, chunk_count__lte=room)
            .exclude(pk__in=claimed)
            .order_by("pk")
            .values_list("pk", "chunk_count")
        )
        taken = []
        for pk, count in waiting[:EMBED_PART]:
            if count <= room:
                taken.append(pk)
                room -= count
        DocumentVersion.objects.filter(_claimable(), pk__in=taken, stage=Stage.EMBEDDING).update(
            claimed_until=_lease(), updated_at=timezone.now()
        )
    return taken


def _release(version_ids: list[int], *, own_id: int | None) -> None:
    """After a failure: the versions are free again, and the others than `own_id` go back
    to the queue (their own messages found them claimed and were dropped)."""
    DocumentVersion.objects.filter(pk__in=version_ids, stage=Stage.EMBEDDING).update(
        claimed_until=None
    )
    for pk in version_ids:
        if pk != own_id:
            enqueue_embed(pk)


def version_embed(*, version_id: int, companions: bool = True) -> None:
    """embedding -> indexing -> ready: vectors into the store, then the version goes live.

    Other small versions waiting for this stage come along (`companions`), so a corpus of
    small documents is embedded in long calls; a retry goes alone, so one version that
    fails cannot keep failing the others."""
    if not _claim(version_id):
        if DocumentVersion.objects.filter(pk=version_id, stage=Stage.INDEXING).exists():
            version_go_live(version_id=version_id)  # a retry after a failed activation
        return
    _embed_claimed([version_id], own_id=version_id, companions=companions)


def versions_embed(*, version_ids: list[int]) -> None:
    """version_embed for the versions of one parse batch, with companions. On a failure
    each goes back to the queue on its own, where a retry goes alone."""
    with transaction.atomic():
        claimed = list(
            DocumentVersion.objects.select_for_update(skip_locked=True)
            .filter(_claimable(), pk__in=version_ids, stage=Stage.EMBEDDING)
            .values_list("pk", flat=True)
        )
        DocumentVersion.objects.filter(pk__in=claimed).update(
            claimed_until=_lease(), updated_at=timezone.now()
        )
    if len(claimed) < len(version_ids):
        for pk in DocumentVersion.objects.filter(
            pk__in=version_ids, stage=Stage.INDEXING
        ).values_list("pk", flat=True):
            version_go_live(version_id=pk)  # a message delivered again after a failure
    if claimed:
        _embed_claimed(claimed, own_id=None, companions=True)


def _embed_claimed(claimed: list[int], *, own_id: int | None, companions: bool) -> None:
    try:
        if companions:
            claimed = claimed + _claim_companions(claimed)
        versions = list(DocumentVersion.objects.filter(pk__in=claimed).select_related("document"))
        _embed_and_index(versions)
    except BaseException as error:
        _release(claimed, own_id=own_id)
        if own_id is None and isinstance(error, Exception):
            logger.warning(
                "embedding %d versions together failed (%s): each goes again alone",
                len(claimed),
                error,
            )
            return
        raise
    try:
        _embedded_together(versions)
        return
    except Exception:
        logger.warning("%d versions failed to go live together; each goes alone", len(versions))
    failure: Exception | None = None
    for version in versions:
        try:
            _embedded(version)
        except Exception as error:
            # Free again; a companion goes back to the queue, the own version is retried.
            _release([version.pk], own_id=own_id)
            if version.pk == own_id:
                failure = error
    if failure is not None:
        raise failure


def _embed_and_index(versions: list[DocumentVersion]) -> None:
    """Every passage of these versions into the vector store, not yet searchable."""
    by_id = {v.pk: v for v in versions}
    store = vector_store()
    chunks = list(Chunk.objects.filter(version_id__in=by_id).order_by("version_id", "index"))
    for start in range(0, len(chunks), EMBED_PART):
        part = chunks[start : start + EMBED_PART]
        steps = metrics.IngestSteps()
        dense = embedder.embed([c.embedding_text for c in part])
        steps.done("embed")
        store.upsert(
            [
                Point(
                    id=str(chunk.point_id),
                    dense=vector.tolist(),
                    sparse=sparse.encode_document(chunk.embedding_text),
                    payload=point_payload(
                        collection_id=chunk.collection_id,
                        document_id=chunk.document_id,
                        version=by_id[chunk.version_id].number,
                        chunk_id=chunk.pk,
                        page=chunk.page,
                        content_type=by_id[chunk.version_id].content_type,
                    ),
                )
                for chunk, vector in zip(part, dense, strict=True)
            ]
        )
        steps.done("index")
        last = part[-1]
        DocumentVersion.objects.filter(pk=last.version_id, stage=Stage.EMBEDDING).update(
            progress=Progress.embedding(
                (last.index + 1) / max(by_id[last.version_id].chunk_count, 1)
            )
        )
        DocumentVersion.objects.filter(pk__in=by_id, stage=Stage.EMBEDDING).update(
            claimed_until=_lease(), updated_at=timezone.now()
        )


def _embedded_together(versions: list[DocumentVersion]) -> None:
    """embedding -> indexing for all in one statement, then live together (versions of
    one document, one after the other)."""
    with transaction.atomic():
        moved = set(
            DocumentVersion.objects.select_for_update()
            .filter(pk__in=[v.pk for v in versions], stage=Stage.EMBEDDING)
            .values_list("pk", flat=True)
        )
        DocumentVersion.objects.filter(pk__in=moved).update(
            stage=Stage.INDEXING,
            progress=Progress.EMBEDDED,
            claimed_until=None,
            updated_at=timezone.now(),
        )
    together: dict[int, DocumentVersion] = {}
    later: list[DocumentVersion] = []
    for version in versions:
        if version.pk not in moved:
            _embedded_gone(version)
        elif version.document_id in together:
            later.append(version)
        else:
            together[version.document_id] = version
    _go_live(list(together.values()))
    for version in later:
        version_go_live(version_id=version.pk)


def _embedded(version: DocumentVersion) -> None:
    """embedding -> indexing, then live (or only live: after _embedded_together failed)."""
    if (
        _advance(
            version.pk,
            Stage.EMBEDDING,
            Stage.INDEXING,
            progress=Progress.EMBEDDED,
            claimed_until=None,
        )
        or DocumentVersion.objects.filter(pk=version.pk, stage=Stage.INDEXING).exists()
    ):
        version_go_live(version_id=version.pk)
    else:
        _embedded_gone(version)


def _embedded_gone(version: DocumentVersion) -> None:
    if not DocumentVersion.objects.filter(pk=version.pk).exists():
        # Deleted while it was being embedded: take back what was written.
        vector_store().delete(document_id=version.document_id, version=version.number)


def version_go_live(*, version_id: int) -> None:
    """indexing -> ready: the new version becomes searchable, the old one goes away."""
    _go_live([DocumentVersion.objects.select_related("document").get(pk=version_id)])


@metrics.INGEST_STAGE_SECONDS.labels("go_live").time()
def _go_live(versions: list[DocumentVersion]) -> None:
    """version_go_live for versions of different documents, in one transaction."""
    store = vector_store()
    for version in versions:
        store.set_live(document_id=version.document_id, version=version.number)
    with transaction.atomic():
        # In the documents' order, so that concurrent calls wait instead of deadlocking.
        previous = dict(
            Document.objects.select_for_update()
            .filter(pk__in=[v.document_id for v in versions])
            .order_by("pk")
            .values_list("pk", "live_version_id")
        )
        ready = set(
            DocumentVersion.objects.select_for_update()
            .filter(pk__in=[v.pk for v in versions], stage=Stage.INDEXING)
            .values_list("pk", flat=True)
        )
        DocumentVersion.objects.filter(pk__in=ready).update(
            stage=Stage.READY, progress=Progress.READY, updated_at=timezone.now()
        )
        live = [v for v in versions if v.pk in ready]
        for collection_id in {v.document.collection_id for v in live}:
            here = [v for v in live if v.document.collection_id == collection_id]
            term_stats.live_versions_changed(
                collection_id=collection_id,
                new=[v.pk for v in here],
                old=[was for v in here if (was := previous.get(v.document_id)) is not None],
            )
        number = {v.document_id: v.number for v in live}
        older = [
            old
            for old in DocumentVersion.objects.filter(document_id__in=number).exclude(pk__in=ready)
            if old.number < number[old.document_id]
        ]
        for version in live:
            Document.objects.filter(pk=version.document_id).update(
                live_version=version, updated_at=timezone.now()
            )
        # Superseded: their passages and vectors go, their rows stay as history.
        Chunk.objects.filter(version_id__in=[o.pk for o in older]).delete()
        DocumentVersion.objects.filter(
            pk__in=[o.pk for o in older], stage__in=ACTIVE_STAGES
        ).update(stage=Stage.FAILED, error="superseded by a newer version")
    for old in older:
        store.delete(document_id=old.document_id, version=old.number)


def ingest_reconcile(*, stale_after: timedelta | None = None) -> int:
    """Re-queue versions whose stage has not moved for `stale_after` (all, when None).

    A worker killed mid-stage, or a broker that lost its message, leaves a version in a
    non-terminal stage: the stage is reset to where its work can be redone safely, at
    most KB_PARSE_ATTEMPTS parses in all, then the version fails with the reason."""
    versions = DocumentVersion.objects.filter(stage__in=ACTIVE_STAGES)
    if stale_after is not None:
        versions = versions.filter(updated_at__lt=timezone.now() - stale_after)
    count = 0
    for version_id, stage, attempts in versions.values_list("pk", "stage", "attempts"):
        if stage in (Stage.PARSING, Stage.CHUNKING) and attempts >= settings.KB_PARSE_ATTEMPTS:
            # Started this often and never finished: its worker died on it each time (out
            # of memory or time, or a crash), and would again, holding up the queue.
            version_fail(
                version_id,
                f"processing stopped {attempts} times before it finished (the worker ran "
                "out of memory or time, or crashed, on this file): it may be damaged or "
                "too large; split or repair it and upload it again",
            )
        elif stage in (Stage.PARSING, Stage.CHUNKING):
            if _advance(version_id, Stage(stage), Stage.QUEUED):
                enqueue_parse(version_id)
                count += 1
        elif stage == Stage.QUEUED:
            DocumentVersion.objects.filter(pk=version_id).update(updated_at=timezone.now())
            enqueue_parse(version_id)
            count += 1
        elif stage == Stage.INDEXING:
            version_go_live(version_id=version_id)
            count += 1
        else:
            # A stale claim is void: its lease is as long as this wait, and a live holder
            # refreshes both. Checked again in the update, since the holder may be busy.
            still = DocumentVersion.objects.filter(pk=version_id, stage=Stage.EMBEDDING)
            if stale_after is not None:
                still = still.filter(_claimable(), updated_at__lt=timezone.now() - stale_after)
            if still.update(updated_at=timezone.now(), claimed_until=None):
                enqueue_embed(version_id)
                count += 1
    return count
