"""A collection's golden set: questions with the answer expected and, optionally, the
documents that hold it. Uploaded as JSON Lines or CSV, or taken from answers people
rated (those marked not helpful wait for an owner to write the answer expected); asked
of model profiles by retrieval.evaluation.

A file has one question a line (JSON Lines: an object; CSV: a row under a header) with
`question`, `answer` and optionally `documents`: the documents' paths in the collection
(or their file names), a list in JSON, separated by ";" in CSV.
"""

import csv
import io
import json
from dataclasses import asdict, dataclass
from typing import Any

from django.conf import settings
from django.db import transaction

from ingest.models import Document
from kb.audit import Actor, audit_record
from kb.models import Collection
from kb.principal import Principal
from retrieval.models import Exchange, Feedback, GoldenQuestion, GoldenSource, Rating

MAX_QUESTIONS = 1000  # a run asks each of them of the model: seconds to minutes each
MAX_FILE_MB = 5
COLUMNS = "question, answer and optionally documents"


class GoldenFileError(ValueError):
    """A golden set file that cannot be read: the message says where and why."""


@dataclass(frozen=True)
class GoldenItem:
    question: str
    answer: str
    documents: tuple[str, ...] = ()


def golden_parse(name: str, data: bytes) -> list[GoldenItem]:
    """The questions of a JSON Lines or CSV file (told apart by the name's extension, else
    by the first character). Raises GoldenFileError."""
    if len(data) > MAX_FILE_MB * 1024 * 1024:
        raise GoldenFileError(f"{name} is larger than {MAX_FILE_MB} MB")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise GoldenFileError(f"{name} is not UTF-8 text") from None
    if not text.strip():
        raise GoldenFileError(f"{name} is empty: expected one question a line ({COLUMNS})")
    lower = name.lower()
    jsonl = lower.endswith((".jsonl", ".ndjson", ".json")) or (
        not lower.endswith(".csv") and text.lstrip().startswith("{")
    )
    items = _jsonl_items(name, text) if jsonl else _csv_items(name, text)
    if not items:
        raise GoldenFileError(f"{name} has no questions ({COLUMNS})")
    if len(items) > MAX_QUESTIONS:
        raise GoldenFileError(f"{name} has {len(items)} questions; at most {MAX_QUESTIONS}")
    return list({item.question: item for item in items}.values())  # the last of repeats


def _item(where: str, values: dict[str, Any]) -> GoldenItem:
    for column in ("question", "answer"):
        if column not in values:
            raise GoldenFileError(f"{where}: no {column!r} ({COLUMNS} are read)")
        if not isinstance(values[column], str) or not values[column].strip():
            raise GoldenFileError(f"{where}: the {column} is empty")
    question = values["question"].strip()
    if len(question) > settings.KB_MAX_QUESTION_CHARS:
        raise GoldenFileError(
            f"{where}: the question is longer than {settings.KB_MAX_QUESTION_CHARS} characters"
        )
    documents = values.get("documents") or []
    if isinstance(documents, str):
        documents = documents.split(";")
    if not isinstance(documents, list) or not all(isinstance(d, str) for d in documents):
        raise GoldenFileError(f"{where}: documents must be a list of file names")
    return GoldenItem(
        question=question,
        answer=values["answer"].strip(),
        documents=tuple(document_names(";".join(documents))),
    )


def document_names(text: str) -> list[str]:
    """File names separated by ";", as in a CSV file's `documents` column."""
    return [name.strip() for name in text.split(";") if name.strip()]


def _jsonl_items(name: str, text: str) -> list[GoldenItem]:
    items = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            values = json.loads(line)
        except json.JSONDecodeError as error:
            raise GoldenFileError(f"{name} line {n}: not JSON ({error.msg})") from None
        if not isinstance(values, dict):
            raise GoldenFileError(f"{name} line {n}: not a JSON object")
        items.append(_item(f"{name} line {n}", values))
    return items


def _csv_items(name: str, text: str) -> list[GoldenItem]:
    reader = csv.DictReader(io.StringIO(text))
    header = {column.strip() for column in reader.fieldnames or []}
    for column in ("question", "answer"):
        if column not in header:
            raise GoldenFileError(
                f"{name}: no {column!r} column in the header (the columns are {COLUMNS})"
            )
    return [
        _item(f"{name} line {reader.line_num}", {k.strip(): v for k, v in row.items() if k})
        for row in reader
        if any((v or "").strip() for v in row.values() if isinstance(v, str))
    ]


def documents_by_name(collection: Collection) -> dict[str, int]:
    """Document id by path, and by file name where that names one document only."""
    paths = dict(Document.objects.filter(collection=collection).values_list("path", "pk"))
    by_name: dict[str, list[int]] = {}
    for path, pk in paths.items():
        by_name.setdefault(path.rsplit("/", 1)[-1], []).append(pk)
    return {name: pks[0] for name, pks in by_name.items() if len(pks) == 1} | paths


def golden_shown(collection: Collection) -> list[tuple[GoldenQuestion, str]]:
    """Each golden question, with kb's answer for one taken from an answer marked not
    helpful that still waits for the answer expected."""
    questions = list(collection.golden_questions.all())
    waiting = [g.query_id for g in questions if not g.answer]
    rejected = dict(Exchange.objects.filter(query_id__in=waiting).values_list("query_id", "answer"))
    return [(g, "" if g.answer else rejected.get(g.query_id, "")) for g in questions]


def unknown_documents(collection: Collection, items: list[GoldenItem]) -> list[str]:
    """The document names the items list that the collection does not hold."""
    known = documents_by_name(collection)
    return sorted({d for item in items for d in item.documents if d not in known})


def golden_set_upload(
    *, collection: Collection, items: list[GoldenItem], actor: Principal | Actor
) -> int:
    """Replaces the uploaded questions with these (those from feedback stay, unless the
    file asks them too); audited. Returns how many the set holds now."""
    with transaction.atomic():
        golden = GoldenQuestion.objects.filter(collection=collection)
        golden.filter(source=GoldenSource.UPLOAD).delete()
        golden.filter(question__in=[i.question for i in items]).delete()
        GoldenQuestion.objects.bulk_create(
            GoldenQuestion(
                collection=collection,
                question=i.question,
                answer=i.answer,
                documents=list(i.documents),
                source=GoldenSource.UPLOAD,
            )
            for i in items
        )
        total = golden.count()
        audit_record(
            action="evaluation.golden_set",
            actor=actor,
            collections=[collection.slug],
            detail={"source": GoldenSource.UPLOAD.value, "questions": len(items), "total": total},
        )
    return total


@dataclass(frozen=True)
class FromFeedback:
    helpful: int
    unhelpful: int  # added without an answer expected: an owner writes it


def golden_from_feedback(*, collection: Collection, actor: Principal | Actor) -> FromFeedback:
    """Adds the answers people rated. One marked helpful that cites this collection's
    documents: its answer as the one expected, its cited documents as those that hold
    it. One marked not helpful that searched this collection: its question alone, since
    kb's answer was wrong and cannot be the one expected; an owner writes the right one
    (golden_answer_set), and until then runs leave the question out. Questions already
    in the set are left as they are. Audited."""
    paths = dict(Document.objects.filter(collection=collection).values_list("pk", "path"))
    present = set(collection.golden_questions.values_list("question", flat=True))
    added: list[GoldenQuestion] = []
    rated = Feedback.objects.select_related("exchange").order_by("pk")
    for feedback in rated:
        exchange = feedback.exchange
        question = exchange.question.strip()
        if not question or question in present:
            continue
        if feedback.rating == Rating.UP:
            cited = [paths[d] for c in exchange.citations if (d := c.get("document_id")) in paths]
            if not cited or not exchange.answer:
                continue
            answer, documents = exchange.answer, sorted(set(cited))
        elif collection.slug in exchange.collections.split():
            answer, documents = "", []
        else:
            continue
        present.add(question)
        added.append(
            GoldenQuestion(
                collection=collection,
                question=question,
                answer=answer,
                documents=documents,
                source=GoldenSource.FEEDBACK,
                query_id=exchange.query_id,
            )
        )
    result = FromFeedback(
        helpful=sum(1 for g in added if g.answer), unhelpful=sum(1 for g in added if not g.answer)
    )
    with transaction.atomic():
        GoldenQuestion.objects.bulk_create(added)
        audit_record(
            action="evaluation.golden_set",
            actor=actor,
            collections=[collection.slug],
            detail={"source": GoldenSource.FEEDBACK.value, **asdict(result)},
        )
    return result


def golden_answer_set(
    *, question: GoldenQuestion, answer: str, documents: list[str], actor: Principal | Actor
) -> None:
    """The answer expected (and the documents that hold it) written by an owner, for a
    question taken from an answer marked not helpful, or corrected; audited."""
    question.answer, question.documents = answer, documents
    with transaction.atomic():
        question.save(update_fields=["answer", "documents"])
        audit_record(
            action="evaluation.golden_set",
            actor=actor,
            collections=[question.collection.slug],
            detail={"source": "edit", "question_id": question.pk},
        )
