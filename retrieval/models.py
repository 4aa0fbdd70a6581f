"""Conversations in the web UI: each user's own questions, answers and feedback."""

from django.conf import settings
from django.db import models


class Conversation(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations"
    )
    title = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at"]

    def __str__(self) -> str:
        return self.title


class Exchange(models.Model):
    """One question and its answer. `query_id` is the one in the question's audit row."""

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="exchanges"
    )
    query_id = models.CharField(max_length=32, unique=True)
    question = models.TextField()
    answer = models.TextField(blank=True)
    refused = models.BooleanField(default=False)
    error = models.TextField(blank=True)
    # [{"n", "chunk_id", "document_title", "page", "quote", "url"}], as the page showed them.
    citations = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)
    # The collections searched, space-separated slugs as in the audit row: whose retention
    # applies (kb.retention). When it has passed, the texts go and `expired_at` says when.
    collections = models.TextField(blank=True, default="")
    expired_at = models.DateTimeField(null=True, blank=True)
    sources_gone = False  # not stored: set by conversations.exchanges_shown for its reader

    class Meta:
        ordering = ["created_at", "pk"]

    def __str__(self) -> str:
        return self.question[:80]

    @property
    def feedback_or_none(self) -> "Feedback | None":
        return getattr(self, "feedback", None)


class Rating(models.TextChoices):
    UP = "up"
    DOWN = "down"


class Feedback(models.Model):
    """A thumbs up or down on an answer, linked to its audit row by `exchange.query_id`."""

    exchange = models.OneToOneField(Exchange, on_delete=models.CASCADE, related_name="feedback")
    rating = models.CharField(max_length=4, choices=Rating.choices)
    comment = models.TextField(blank=True, max_length=2000)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.rating} on {self.exchange.query_id}"


class AnswerUsage(models.Model):
    """What one answer cost: written with the question's audit row (same `query_id`),
    on every path that asks the model (web, /api/v1/ask, /v1, MCP).

    The tokens count against the user's daily budget and against each collection the
    answer's passages came from (`collections`), whole for each. `cost` is priced when
    the answer is written, so a changed price does not rewrite the past."""

    query_id = models.CharField(max_length=32, unique=True)
    created_at = models.DateTimeField(db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    user_name = models.CharField(max_length=150)  # kept when the user is deleted
    collections = models.ManyToManyField("kb.Collection", related_name="+")
    profile = models.CharField(max_length=63)  # the model profile's name, or "default"
    model = models.CharField(max_length=200)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    # The server did not report the prompt's tokens (llama.cpp in a stream): estimated.
    prompt_estimated = models.BooleanField(default=False)
    first_token_ms = models.PositiveIntegerField(null=True)
    cost = models.DecimalField(max_digits=16, decimal_places=6, default=0)

    class Meta:
        indexes = [models.Index(fields=["user", "created_at"], name="usage_user_time")]

    def __str__(self) -> str:
        return f"{self.query_id}: {self.prompt_tokens}+{self.completion_tokens} tokens"

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class GoldenSource(models.TextChoices):
    UPLOAD = "upload"
    FEEDBACK = "feedback"


class GoldenQuestion(models.Model):
    """One question of a collection's golden set (retrieval.evaluation): what it should
    answer and, optionally, the documents (their paths) that hold the answer."""

    collection = models.ForeignKey(
        "kb.Collection", on_delete=models.CASCADE, related_name="golden_questions"
    )
    question = models.TextField()
    answer = models.TextField()
    documents = models.JSONField(default=list)  # document paths, as the file listed them
    source = models.CharField(max_length=8, choices=GoldenSource.choices)
    query_id = models.CharField(max_length=32, blank=True)  # the answer rated, from feedback
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        # Each question once in a set: kept so by retrieval.golden (no unique index, which
        # PostgreSQL refuses for a long text).
        ordering = ["pk"]

    def __str__(self) -> str:
        return self.question[:80]


class RunStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class EvaluationRun(models.Model):
    """The golden set asked of one model profile. Runs started together share `batch`,
    which the page shows side by side. `golden` is the set as it was when the run
    started; `rows` hold each question's result and `metrics` their summary."""

    collection = models.ForeignKey(
        "kb.Collection", on_delete=models.CASCADE, related_name="evaluation_runs"
    )
    batch = models.CharField(max_length=32, db_index=True)
    profile = models.CharField(max_length=63)  # a model profile's name, or "default"
    model = models.CharField(max_length=200, blank=True)  # what answered
    # Whose questions they are (the access and budget they are asked with).
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    started_by = models.CharField(max_length=150)  # the audit actor's name
    status = models.CharField(max_length=8, choices=RunStatus.choices, default=RunStatus.QUEUED)
    error = models.TextField(blank=True)
    golden = models.JSONField(default=list)  # [{"question", "answer", "documents"}]
    rows = models.JSONField(default=list)
    metrics = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)
    # When it last moved (queued, taken, a question answered): a run that has not moved
    # for KB_EVALUATION_STALE_SECONDS lost its worker (evaluation.evaluations_reconcile).
    updated_at = models.DateTimeField(auto_now=True, db_index=True)
    finished_at = models.DateTimeField(null=True)

    class Meta:
        ordering = ["-created_at", "pk"]

    def __str__(self) -> str:
        return f"{self.collection_id}/{self.profile} {self.created_at:%Y-%m-%d %H:%M}"
