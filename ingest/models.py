from django.conf import settings
from django.db import models

from kb.models import Collection


def embedding_text(context: str, text: str) -> str:
    """What a passage's vectors are made of: the passage with its title and heading."""
    return f"{context}\n{text}" if context else text


class Stage(models.TextChoices):
    QUEUED = "queued"
    PARSING = "parsing"
    CHUNKING = "chunking"
    EMBEDDING = "embedding"
    INDEXING = "indexing"
    READY = "ready"
    FAILED = "failed"


ACTIVE_STAGES = (Stage.QUEUED, Stage.PARSING, Stage.CHUNKING, Stage.EMBEDDING, Stage.INDEXING)


class Progress:
    """A version's progress bar: where each stage leaves it. Embedding takes most."""

    PARSED = 0.2
    CHUNKED = 0.3
    EMBEDDED = 0.95
    READY = 1.0

    @staticmethod
    def embedding(done: float) -> float:
        """Part way through embedding, `done` being the share of passages embedded."""
        return Progress.CHUNKED + (Progress.EMBEDDED - Progress.CHUNKED) * done


class Document(models.Model):
    """One document in a collection, known by its path (file name, or path in a folder).

    Its searchable content is `live_version`; a newer version is processed beside it
    and replaces it only once all of it is indexed.
    """

    collection = models.ForeignKey(Collection, on_delete=models.CASCADE, related_name="documents")
    path = models.CharField(max_length=1000)
    title = models.CharField(max_length=500)
    live_version = models.ForeignKey(
        "DocumentVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["path"]
        constraints = [
            models.UniqueConstraint(fields=["collection", "path"], name="document_path_once")
        ]

    def __str__(self) -> str:
        return f"{self.collection.slug}/{self.path}"


class DocumentVersion(models.Model):
    """One upload of a document's content, processed stage by stage."""

    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    sha256 = models.CharField(max_length=64, db_index=True)
    size = models.BigIntegerField()
    filename = models.CharField(max_length=255)
    content_type = models.CharField(max_length=100)
    stage = models.CharField(max_length=16, choices=Stage.choices, default=Stage.QUEUED)
    progress = models.FloatField(default=0.0)
    error = models.TextField(blank=True)
    pages = models.PositiveIntegerField(null=True)
    chunk_count = models.PositiveIntegerField(default=0)
    attempts = models.PositiveSmallIntegerField(default=0)
    # While set and in the future, one embedding task holds this version (its own or as a
    # companion of another's): others leave it alone.
    claimed_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)

    class Meta:
        ordering = ["document_id", "number"]
        constraints = [
            models.UniqueConstraint(fields=["document", "number"], name="version_number_once")
        ]

    def __str__(self) -> str:
        return f"{self.document} v{self.number} ({self.stage})"


class Chunk(models.Model):
    """A passage: its text lives here, its vectors in the vector store under `point_id`."""

    version = models.ForeignKey(DocumentVersion, on_delete=models.CASCADE, related_name="chunks")
    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="chunks")
    collection_id = models.BigIntegerField(db_index=True)
    index = models.PositiveIntegerField()
    text = models.TextField()
    context = models.CharField(max_length=1000, blank=True)  # title and heading, embedded too
    page = models.PositiveIntegerField(null=True)
    section = models.CharField(max_length=500, blank=True)
    element_type = models.CharField(max_length=40, blank=True)
    token_count = models.PositiveIntegerField()
    point_id = models.UUIDField(unique=True)

    class Meta:
        ordering = ["version_id", "index"]
        constraints = [
            models.UniqueConstraint(fields=["version", "index"], name="chunk_index_once")
        ]

    def __str__(self) -> str:
        return f"{self.version} #{self.index}"

    @property
    def embedding_text(self) -> str:
        return embedding_text(self.context, self.text)


class TermCount(models.Model):
    """How many live passages of a collection hold a BM25 term (ingest.term_stats)."""

    collection = models.ForeignKey(Collection, on_delete=models.CASCADE, related_name="+")
    term = models.BigIntegerField()  # the sparse vector's index; -1 counts all passages
    passages = models.IntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["collection", "term"], name="term_count_once")
        ]

    def __str__(self) -> str:
        return f"{self.collection_id}/{self.term}: {self.passages}"
