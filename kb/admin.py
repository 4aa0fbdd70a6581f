"""The Django admin, for administrators. Every change goes through the audited services."""

from typing import Any

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest

from kb import directory, services
from kb.audit import audit_record
from kb.models import (
    ApiToken,
    AuditEvent,
    Membership,
    ModelProfile,
    Role,
    ServiceAccount,
)
from kb.principal import session_principal


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin[Membership]):
    list_display = ("collection", "user", "group", "role")
    list_filter = ("collection", "role")
    autocomplete_fields = ("user",)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return ("collection", "user", "group") if obj else ()

    def save_model(self, request: HttpRequest, obj: Membership, form: Any, change: bool) -> None:
        saved, _ = services.member_add(
            collection=obj.collection,
            role=Role(obj.role),
            user=obj.user,
            group=obj.group,
            actor=session_principal(request),
        )
        obj.pk = saved.pk

    def delete_model(self, request: HttpRequest, obj: Membership) -> None:
        services.member_remove(
            collection=obj.collection,
            user=obj.user,
            group=obj.group,
            actor=session_principal(request),
        )

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Membership]) -> None:
        for membership in queryset:
            self.delete_model(request, membership)


class ReadOnlyAdmin(admin.ModelAdmin[Any]):
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(ApiToken)
class ApiTokenAdmin(ReadOnlyAdmin):
    list_display = ("prefix", "name", "user", "scope", "expires_at", "revoked_at", "last_used_at")
    list_filter = ("scope",)
    actions = ["revoke"]

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        for token in queryset:
            services.token_revoke(token=token, actor=session_principal(request))

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Needed for the revoke action; every field stays read-only.
        return bool(request.user.is_superuser)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in ApiToken._meta.fields] + ["collections"]


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ("seq", "created_at", "action", "outcome", "actor_name", "collections")
    list_filter = ("action", "outcome", "actor_type")
    search_fields = ("actor_name", "query", "collections")
    date_hierarchy = "created_at"


@admin.register(ModelProfile)
class ModelProfileAdmin(admin.ModelAdmin[ModelProfile]):
    list_display = (
        "name",
        "model",
        "is_local",
        "price_prompt_per_million",
        "price_completion_per_million",
    )

    def save_model(self, request: HttpRequest, obj: ModelProfile, form: Any, change: bool) -> None:
        with transaction.atomic():
            super().save_model(request, obj, form, change)
            audit_record(
                action="model_profile.save",
                actor=session_principal(request),
                detail={"profile": obj.name, "is_local": obj.is_local},
            )


class KbUserAdmin(UserAdmin[User]):
    """Unticking "active" deactivates as SCIM does: sessions ended, tokens revoked, audited."""

    def save_model(self, request: HttpRequest, obj: User, form: Any, change: bool) -> None:
        toggled = change and "is_active" in form.changed_data
        with transaction.atomic():
            super().save_model(request, obj, form, change)
            if toggled and not obj.is_active:
                directory.user_deactivate(user=obj, actor=session_principal(request))
            elif toggled:
                directory.user_activate(user=obj, actor=session_principal(request))


admin.site.unregister(User)
admin.site.register(User, KbUserAdmin)
admin.site.register(ServiceAccount, ReadOnlyAdmin)
admin.site.site_header = "kb administration"
