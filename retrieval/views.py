"""Pages: ask (streamed, cited answers in conversations), search, the cited passage, the
original file behind it, usage, and a collection's evaluation on its golden set."""

import math
from collections.abc import Generator
from typing import Any

from asgiref.sync import sync_to_async
from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from ingest import storage
from ingest.selectors import document_file, passage_read
from kb.models import Collection, Role
from kb.principal import session_principal
from kb.selectors import ReadOnlyAccess, collection_get, readable_collections
from retrieval import conversations, evaluation, golden, services, usage
from retrieval.models import Rating, RunStatus
from retrieval.streaming import event_stream, sse

CONTEXT_PASSAGES = 2


def _ask_page(request: HttpRequest, conversation: Any = None) -> HttpResponse:
    user: Any = request.user
    chosen = request.GET.getlist("collections")
    readable = [c for c, _ in readable_collections(session_principal(request))]
    return render(
        request,
        "retrieval/ask.html",
        {
            "collections": readable,
            "chosen": set(chosen) if chosen else {c.slug for c in readable},
            "conversation": conversation,
            "exchanges": conversations.exchanges_shown(user, conversation) if conversation else [],
            "conversations": conversations.conversations_of(user),
            "ratings": Rating,
        },
    )


@login_required
def ask(request: HttpRequest) -> HttpResponse:
    return _ask_page(request)


@login_required
def conversation(request: HttpRequest, conversation_id: int) -> HttpResponse:
    user: Any = request.user
    return _ask_page(request, conversations.conversation_get(user, conversation_id))


class AskForm(forms.Form):
    question = forms.CharField(strip=True)
    collections = forms.MultipleChoiceField(required=False)
    conversation = forms.IntegerField(required=False)
    private = forms.BooleanField(required=False)

    def __init__(self, *args: Any, slugs: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Any slug passes the form; services decide (an unreadable one is 404, audited).
        field = self.fields["collections"]
        assert isinstance(field, forms.MultipleChoiceField)
        field.choices = [(s, s) for s in slugs]


@login_required
@require_POST
async def ask_stream(request: HttpRequest) -> HttpResponseBase:
    """The ask page's answer as server-sent events (see conversations.conversation_ask)."""
    user: Any = await request.auser()
    form = AskForm(request.POST, slugs=request.POST.getlist("collections"))
    if not form.is_valid():
        return JsonResponse({"detail": "Type a question first."}, status=422)
    try:
        events = await sync_to_async(_start, thread_sensitive=False)(user, form.cleaned_data)
    except services.QuestionTooLong as error:
        return JsonResponse({"detail": f"Please shorten it: {error}."}, status=422)
    except Http404:
        return JsonResponse({"detail": "No such collection."}, status=404)
    except usage.BudgetExceeded as spent:
        refused = JsonResponse({"detail": spent.message}, status=429)
        refused["Retry-After"] = str(spent.retry_after())
        return refused
    except services.ModelBusy as busy:
        passages = [conversations.passage_dict(p) for p in busy.passages[:5]]
        refused = JsonResponse({"detail": str(busy), "passages": passages}, status=429)
        refused["Retry-After"] = str(busy.retry_after)
        return refused
    return event_stream(_encoded(events))


def _start(user: Any, data: dict[str, Any]) -> Generator[tuple[str, Any], None, None]:
    conversation = (
        conversations.conversation_get(user, data["conversation"]) if data["conversation"] else None
    )
    return conversations.conversation_ask(
        user=user,
        question=data["question"],
        collections=data["collections"] or None,
        conversation=conversation,
        private=data["private"],
    )


def _encoded(events: Generator[tuple[str, Any], None, None]) -> Generator[bytes, None, None]:
    try:
        for name, data in events:
            yield sse(name, data)
    finally:
        events.close()


class FeedbackForm(forms.Form):
    rating = forms.ChoiceField(choices=Rating.choices)
    comment = forms.CharField(required=False, max_length=2000)


@login_required
@require_POST
def feedback(request: HttpRequest, query_id: str) -> HttpResponse:
    form = FeedbackForm(request.POST)
    if not form.is_valid():
        return JsonResponse({"detail": "Choose thumbs up or down."}, status=422)
    given = conversations.feedback_give(
        user=request.user,  # type: ignore[arg-type]
        query_id=query_id,
        rating=Rating(form.cleaned_data["rating"]),
        comment=form.cleaned_data["comment"],
    )
    if request.headers.get("Accept") == "application/json":
        return JsonResponse({"detail": "Thank you for the feedback."})
    return redirect("conversation", given.exchange.conversation_id)


class SearchForm(forms.Form):
    q = forms.CharField(max_length=2000, strip=True)


@login_required
def search(request: HttpRequest) -> HttpResponse:
    readable = [c for c, _ in readable_collections(session_principal(request))]
    chosen = request.GET.getlist("collections")
    form = SearchForm(request.GET or None)
    passages = None
    if form.is_valid():
        _, result = services.search_run(
            principal=session_principal(request),
            query=form.cleaned_data["q"],
            collections=chosen or None,
            top_k=20,
        )
        passages = result.passages
    return render(
        request,
        "retrieval/search.html",
        {
            "form": form,
            "query": form.cleaned_data.get("q", "") if form.is_bound else "",
            "passages": passages,
            "collections": readable,
            "chosen": set(chosen) if chosen else {c.slug for c in readable},
        },
    )


@login_required
def passage(request: HttpRequest, chunk_id: int) -> HttpResponse:
    document, chunk, around = passage_read(
        session_principal(request), chunk_id, context=CONTEXT_PASSAGES
    )
    return render(
        request,
        "retrieval/passage.html",
        {"document": document, "chunk": chunk, "around": around},
    )


@login_required
def document_download(request: HttpRequest, document_id: int) -> FileResponse:
    _, version = document_file(session_principal(request), document_id)
    return FileResponse(
        storage.path_for(version.sha256).open("rb"),
        as_attachment=True,
        filename=version.filename,
        content_type=version.content_type,
    )


class UsageForm(forms.Form):
    group_by = forms.ChoiceField(
        choices=[(g, g) for g in ("collection", "user", "group", "model")],
        required=False,
        label="By",
    )
    period = forms.ChoiceField(choices=[("day", "day"), ("month", "month")], required=False)
    since = forms.DateField(
        required=False, label="From", widget=forms.DateInput(attrs={"type": "date"})
    )
    until = forms.DateField(
        required=False,
        label="To",
        help_text="inclusive, UTC",
        widget=forms.DateInput(attrs={"type": "date"}),
    )
    collection = forms.SlugField(required=False, max_length=63)


CHART_WIDTH, CHART_HEIGHT = 640, 160


def usage_chart(report: usage.UsageReport) -> list[dict[str, Any]]:
    """A bar a period of the report's dates (its tokens, all keys together; empty
    periods too), scaled for the page's inline SVG; about six of them labelled."""
    periods = dict.fromkeys(usage.periods_between(report.period, report.since, report.until), 0)
    for total in report.totals:
        periods[total.period] += total.total_tokens
    if not any(periods.values()):
        return []
    top = max(periods.values())
    step = CHART_WIDTH / len(periods)
    every = math.ceil(len(periods) / 6)
    last = len(periods) - 1
    return [
        {
            "period": period,
            "tokens": tokens,
            "x": round(i * step + step * 0.1, 1),
            "width": round(step * 0.8, 1),
            "height": round(tokens / top * (CHART_HEIGHT - 20), 1),
            "y": round(CHART_HEIGHT - tokens / top * (CHART_HEIGHT - 20), 1),
            # The last label ends at its bar's right edge, inside the picture.
            "label": (i % every == 0 and i <= last - every) or i == last,
            "label_x": round((i + 0.9) * step, 1) if i == last else round(i * step + step * 0.1, 1),
            "anchor": "end" if i == last else "start",
        }
        for i, (period, tokens) in enumerate(periods.items())
    ]


@login_required
def usage_page(request: HttpRequest) -> HttpResponse:
    """Tokens and cost as a table and a chart: administrators see all, owners their
    collections; anyone else gets 404, as for anything they may not see."""
    form = UsageForm(request.GET)
    data = form.cleaned_data if form.is_valid() else {}
    asked: dict[str, Any] = {
        "principal": session_principal(request),
        "group_by": data.get("group_by") or "collection",
        "period": data.get("period") or "day",
        "collection": data.get("collection") or None,
    }
    try:
        try:
            report = usage.usage_report(**asked, since=data.get("since"), until=data.get("until"))
        except ValueError as error:
            form.add_error(None, f"{error}: showing the default dates instead.")
            report = usage.usage_report(**asked)
    except ReadOnlyAccess:
        raise Http404 from None
    return render(
        request,
        "retrieval/usage.html",
        {
            "form": form,
            "report": report,
            "sum": usage.usage_sum(report.totals),
            "chart": usage_chart(report),
            "chart_width": CHART_WIDTH,
            "chart_height": CHART_HEIGHT,
        },
    )


def _owned(request: HttpRequest, slug: str) -> Collection:
    """Owners and administrators only: a reader gets 403, anyone else 404."""
    return collection_get(session_principal(request), slug, role=Role.OWNER)[0]


class GoldenUploadForm(forms.Form):
    file = forms.FileField(label="Golden set file", help_text="JSON Lines or CSV")


class GoldenAnswerForm(forms.Form):
    answer = forms.CharField(max_length=20000)
    documents = forms.CharField(required=False, max_length=5000)  # file names, ";" between


class EvaluationForm(forms.Form):
    profile = forms.ChoiceField(label="Model profile")
    compare = forms.ChoiceField(label="Side by side with", required=False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        names = [(n, n) for n in evaluation.profile_names()]
        self.fields["profile"].choices = names  # type: ignore[attr-defined]
        self.fields["compare"].choices = [("", "none"), *names]  # type: ignore[attr-defined]


def _side_by_side(runs: list[Any]) -> list[tuple[str, list[str]]]:
    """A line per measure, with a value per run."""
    shown = [evaluation.metrics_shown(r) for r in runs]
    return [(label, [values[i][1] for values in shown]) for i, (label, _) in enumerate(shown[0])]


@login_required
def evaluation_page(request: HttpRequest, slug: str) -> HttpResponse:
    """The golden set, a form to ask it of one or two model profiles, and the runs."""
    collection = _owned(request, slug)
    batches = evaluation.evaluation_batches(collection)
    own = collection.model_profile.name if collection.model_profile else services.DEFAULT_PROFILE
    return render(
        request,
        "retrieval/evaluation.html",
        {
            "collection": collection,
            "golden": golden.golden_shown(collection),
            "upload_form": GoldenUploadForm(),
            "run_form": EvaluationForm(initial={"profile": own}),
            "latest": batches[0] if batches else None,
            "side_by_side": _side_by_side(batches[0].runs) if batches else [],
            "labels": [label for _, label, _ in evaluation.METRICS],
            "history": [
                (r, [v for _, v in evaluation.metrics_shown(r)]) for b in batches for r in b.runs
            ],
            "running": bool(batches) and not batches[0].finished,
            "statuses": RunStatus,
        },
    )


@login_required
@require_POST
def golden_upload(request: HttpRequest, slug: str) -> HttpResponse:
    collection = _owned(request, slug)
    form = GoldenUploadForm(request.POST, request.FILES)
    if not form.is_valid():
        messages.error(request, "Choose a JSON Lines or CSV file first.")
        return redirect("evaluation", slug)
    upload = form.cleaned_data["file"]
    try:
        items = golden.golden_parse(upload.name, upload.read())
    except golden.GoldenFileError as error:
        messages.error(request, f"Nothing was changed: {error}.")
        return redirect("evaluation", slug)
    total = golden.golden_set_upload(
        collection=collection, items=items, actor=session_principal(request)
    )
    messages.success(request, f"{len(items)} questions read; the golden set holds {total}.")
    if unknown := golden.unknown_documents(collection, items):
        messages.warning(
            request, f"No document here is called {', '.join(unknown)}: counted as not found."
        )
    return redirect("evaluation", slug)


@login_required
@require_POST
def golden_from_feedback(request: HttpRequest, slug: str) -> HttpResponse:
    collection = _owned(request, slug)
    added = golden.golden_from_feedback(collection=collection, actor=session_principal(request))
    messages.success(
        request,
        f"{added.helpful} helpful answers added to the golden set, and {added.unhelpful} "
        "questions whose answers were marked not helpful: write the answer each expects.",
    )
    return redirect("evaluation", slug)


@login_required
@require_POST
def golden_answer(request: HttpRequest, slug: str, question_id: int) -> HttpResponse:
    collection = _owned(request, slug)
    question = get_object_or_404(collection.golden_questions, pk=question_id)
    form = GoldenAnswerForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Write the answer expected first.")
        return redirect("evaluation", slug)
    golden.golden_answer_set(
        question=question,
        answer=form.cleaned_data["answer"],
        documents=golden.document_names(form.cleaned_data["documents"]),
        actor=session_principal(request),
    )
    messages.success(request, "The answer expected is saved; runs now ask this question.")
    return redirect("evaluation", slug)


@login_required
@require_POST
def evaluation_start(request: HttpRequest, slug: str) -> HttpResponse:
    collection = _owned(request, slug)
    form = EvaluationForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose a model profile.")
        return redirect("evaluation", slug)
    profiles = [form.cleaned_data["profile"], form.cleaned_data["compare"]]
    try:
        evaluation.evaluation_start(
            collection=collection,
            user=request.user,
            profiles=[p for p in profiles if p],
            actor=session_principal(request),
            background=True,
        )
    except evaluation.EvaluationRefused as error:
        messages.error(request, f"Not started: {error}.")
    else:
        messages.success(request, "Started: the results appear below as the questions are asked.")
    return redirect("evaluation", slug)
