from typing import Any

from django.apps import AppConfig


class KbConfig(AppConfig):
    name = "kb"
    verbose_name = "kb"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_login_failed
        from django.urls import register_converter

        from kb.ids import IdConverter

        register_converter(IdConverter, "id")

        user_login_failed.connect(_audit_failed_login, dispatch_uid="kb_audit_failed_login")


def _audit_failed_login(sender: Any, credentials: dict[str, Any], **kwargs: Any) -> None:
    # Django's auth only tells us through this signal; the password arrives masked.
    from kb.audit import anonymous, audit_record
    from kb.models import Outcome

    audit_record(
        action="auth.login_failed",
        actor=anonymous(str(credentials.get("username", ""))),
        outcome=Outcome.DENIED,
    )
