import uuid
from typing import Any, NoReturn

from django.conf import settings
from django.contrib.auth.models import Group
from django.contrib.sessions.base_session import AbstractBaseSession
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q


class Role(models.IntegerChoices):
    """Ordered: each role can do everything the ones below it can."""

    READER = 1, "reader"
    EDITOR = 2, "editor"
    OWNER = 3, "owner"

    @classmethod
    def parse(cls, name: str) -> "Role":
        for role in cls:
            if role.label == name:
                return role
        raise ValueError(f"unknown role {name!r}: use reader, editor or owner")


slug_validator = RegexValidator(
    r"^[a-z0-9][a-z0-9_-]{0,62}$",
    "Use 1 to 63 lower-case letters, digits, '-' or '_', starting with a letter or digit.",
)


class ModelProfile(models.Model):
    """An OpenAI-compatible model service (vLLM, llama.cpp, ...) that can answer.

    Several base URLs serve the same model; requests are spread across the healthy
    ones. `is_local` says it runs on the company's own machines: only local profiles
    may answer for collections marked sensitive.
    """

    name = models.CharField(max_length=63, unique=True, validators=[slug_validator])
    base_urls = models.TextField(help_text="One OpenAI-compatible base URL per line.")
    model = models.CharField(max_length=200)
    api_key_env = models.CharField(
        max_length=100, blank=True, help_text="Name of the environment variable with the key."
    )
    is_local = models.BooleanField(default=True)
    # What an answer costs, in the operator's currency (kb.usage): per million tokens.
    price_prompt_per_million = models.DecimalField(
        max_digits=12,
        decimal_places=4,
        default=0,
        validators=[MinValueValidator(0)],
        help_text="Price of a million prompt tokens.",
    )
    price_completion_per_million = models.DecimalField(
        max_digits=12,
        decimal_places=4,
        default=0,
        validators=[MinValueValidator(0)],
        help_text="Price of a million completion (answer) tokens.",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def urls(self) -> list[str]:
        return [line.strip() for line in self.base_urls.splitlines() if line.strip()]


class Collection(models.Model):
    slug = models.CharField(max_length=63, unique=True, validators=[slug_validator])
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # How questions over this collection are answered.
    system_prompt = models.TextField(blank=True, help_text="Added to kb's own instructions.")
    refusal_message = models.TextField(
        blank=True, help_text="Said when the documents do not answer (default: kb's)."
    )
    model_profile = models.ForeignKey(
        ModelProfile, null=True, blank=True, on_delete=models.PROTECT, related_name="collections"
    )
    sensitive = models.BooleanField(
        default=False, help_text="Only models marked local may answer over this collection."
    )
    budget_tokens_per_month = models.PositiveBigIntegerField(
        null=True,
        blank=True,
        help_text="Tokens its answers may use per calendar month (UTC); "
        "empty: KB_BUDGET_COLLECTION_TOKENS_PER_MONTH; 0: unlimited.",
    )
    # Retention (kb.retention): administrators only.
    text_retention_days = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MaxValueValidator(36500)],
        help_text="Days the texts of questions and answers over it are kept, in the audit "
        "trail and in conversations; empty: KB_TEXT_RETENTION_DAYS; 0: kept for good.",
    )
    legal_hold = models.BooleanField(
        default=False,
        help_text="Keeps every question and answer text over it, whatever the retention, "
        "until the hold is lifted.",
    )

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        if self.sensitive and self.model_profile and not self.model_profile.is_local:
            raise ValidationError(
                {"model_profile": "A sensitive collection may only use a local model profile."}
            )


class Membership(models.Model):
    """A user's or a group's role in one collection."""

    collection = models.ForeignKey(Collection, on_delete=models.CASCADE, related_name="members")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE
    )
    group = models.ForeignKey(Group, null=True, blank=True, on_delete=models.CASCADE)
    role = models.PositiveSmallIntegerField(choices=Role.choices)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(user__isnull=False, group__isnull=True)
                | Q(user__isnull=True, group__isnull=False),
                name="membership_user_xor_group",
            ),
            models.UniqueConstraint(fields=["collection", "user"], name="membership_user_once"),
            models.UniqueConstraint(fields=["collection", "group"], name="membership_group_once"),
        ]

    def __str__(self) -> str:
        who = f"user {self.user}" if self.user_id else f"group {self.group}"
        return f"{who} is {Role(self.role).label} of {self.collection}"


class ServiceAccount(models.Model):
    """Marks a user that is a machine: no password, acts only through its tokens."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="service_account"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return str(self.user)


class SsoIdentity(models.Model):
    """The single sign-on identity a user logs in with (kb.sso): the provider's issuer and
    the subject it gives the person, the one pair OpenID Connect promises is stable and
    never reassigned. A user name or an e-mail address can change hands; this cannot."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="sso_identity"
    )
    issuer = models.CharField(max_length=255)
    subject = models.CharField(max_length=255)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["issuer", "subject"], name="sso_identity_once")
        ]

    def __str__(self) -> str:
        return f"{self.user} is {self.subject} at {self.issuer}"


class TokenScope(models.TextChoices):
    READ = "read", "read"
    READ_WRITE = "read-write", "read-write"


class ApiToken(models.Model):
    """A bearer token: `kb_<prefix>_<secret>`. Only the SHA-256 of the whole token is kept."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=16, unique=True)
    secret_hash = models.CharField(max_length=64)
    scope = models.CharField(max_length=16, choices=TokenScope.choices)
    collections = models.ManyToManyField(Collection, related_name="tokens")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"kb_{self.prefix}_… ({self.user})"

    @property
    def role_cap(self) -> Role:
        return Role.READER if self.scope == TokenScope.READ else Role.EDITOR


class Outcome(models.TextChoices):
    OK = "ok"
    DENIED = "denied"
    REFUSED = "refused"
    ERROR = "error"


# The texts a retention run may erase from an audit row (kb.audit.texts_of): these
# columns, and these keys of its detail (a feedback comment).
AUDIT_TEXT_FIELDS = ("query", "answer", "rewritten_query")
AUDIT_TEXT_DETAIL_KEYS = ("comment",)


class AuditEventQuerySet(models.QuerySet["AuditEvent"]):
    def update(self, **kwargs: Any) -> NoReturn:
        raise PermissionError("audit events are append-only")

    def delete(self) -> NoReturn:
        raise PermissionError("audit events are append-only; use audit_prune")

    def prune(self) -> int:
        """The one way rows leave the trail: kb.audit.audit_prune, which records a checkpoint."""
        deleted, _ = models.QuerySet.delete(self)
        return deleted

    def texts_erase(self, *, by: int) -> int:
        """The one way texts leave a row: a retention run (retrieval.retention) whose own
        row is seq `by`. Only rows whose hash covers their texts through `texts_hash`."""
        rows = self.filter(texts_expired_by__isnull=True).exclude(texts_hash="")
        for key in AUDIT_TEXT_DETAIL_KEYS:
            for pk, detail in rows.filter(detail__has_key=key).values_list("pk", "detail"):
                del detail[key]
                models.QuerySet.update(rows.filter(pk=pk), detail=detail)
        erased = dict.fromkeys(AUDIT_TEXT_FIELDS, "")
        return models.QuerySet.update(rows, texts_expired_by=by, **erased)


class AuditEvent(models.Model):
    """One append-only row of the audit trail, hash-chained to the row before it.

    Actor and collections are copied in as text, so the row stays whole and
    verifiable when users, tokens or collections are later deleted.
    """

    seq = models.BigIntegerField(unique=True)
    created_at = models.DateTimeField(db_index=True)
    action = models.CharField(max_length=64, db_index=True)
    outcome = models.CharField(max_length=8, choices=Outcome.choices)
    actor_type = models.CharField(max_length=16)  # user, service, token, anonymous, system
    actor_id = models.BigIntegerField(null=True)
    actor_name = models.CharField(max_length=150, db_index=True)
    token_prefix = models.CharField(max_length=16, blank=True)
    collections = models.TextField(blank=True)  # slugs, space-separated
    client_ip = models.CharField(max_length=45, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    latency_ms = models.IntegerField(null=True)
    query = models.TextField(blank=True)
    chunk_ids = models.JSONField(default=list)
    cited_chunk_ids = models.JSONField(default=list)
    model = models.CharField(max_length=200, blank=True)
    answer = models.TextField(blank=True)
    detail = models.JSONField(default=dict)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)
    # Added later (kb.audit.LATER_FIELDS): in a row's hash only when not empty.
    rewritten_query = models.TextField(blank=True, default="")  # a follow-up, standalone
    texts_hash = models.CharField(max_length=64, blank=True, default="")  # keyed, of the texts
    # Not hashed: the seq of the retention run that erased the texts (kb.audit checks it).
    texts_expired_by = models.BigIntegerField(null=True, blank=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["seq"]

    def __str__(self) -> str:
        return f"#{self.seq} {self.action} {self.outcome} by {self.actor_name}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise PermissionError("audit events are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise PermissionError("audit events are append-only; use audit_prune")


class AuditChainHead(models.Model):
    """Singleton: the last sequence number and hash. Locking it serialises writers."""

    seq = models.BigIntegerField(default=0)
    hash = models.CharField(max_length=64)

    def __str__(self) -> str:
        return f"audit head at seq {self.seq}"


class AuditCheckpoint(models.Model):
    """Where a prune cut the chain: the first kept row must follow this seq and hash."""

    seq = models.BigIntegerField()
    hash = models.CharField(max_length=64)
    pruned_rows = models.BigIntegerField()
    before = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-seq"]

    def __str__(self) -> str:
        return f"audit checkpoint at seq {self.seq}"


def _scim_id() -> str:
    return uuid.uuid4().hex


class ScimUser(models.Model):
    """A user provisioned by an identity provider over SCIM (kb.scim): the id the provider
    knows it by, and what only SCIM keeps. The rest lives on the Django user."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="scim"
    )
    scim_id = models.CharField(max_length=32, unique=True, default=_scim_id)
    external_id = models.CharField(max_length=255, blank=True, db_index=True)
    # As provisioned: [{"value", "type", "primary"}]; the primary (or first) is User.email.
    emails = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"SCIM user {self.scim_id}"


class ScimGroup(models.Model):
    """A Django group provisioned over SCIM: roles given to it on collections follow the
    identity provider's membership."""

    group = models.OneToOneField(Group, on_delete=models.CASCADE, related_name="scim")
    scim_id = models.CharField(max_length=32, unique=True, default=_scim_id)
    external_id = models.CharField(max_length=255, blank=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"SCIM group {self.scim_id}"


class UserSession(AbstractBaseSession):
    """A login session (kb.sessions), findable by its user: deactivation deletes them."""

    user_id = models.BigIntegerField(null=True, db_index=True)

    @classmethod
    def get_session_store_class(cls) -> type[Any]:
        from kb.sessions import SessionStore

        return SessionStore
