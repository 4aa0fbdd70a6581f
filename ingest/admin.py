"""The collection's admin page: here, not in kb.admin, because deleting a collection
removes its documents' files and vectors too (ingest.services.collection_delete)."""

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from ingest import services as ingest_services
from kb import services as kb_services
from kb.models import Collection, Membership
from kb.principal import session_principal


class MembershipInline(admin.TabularInline[Membership, Collection]):
    model = Membership
    extra = 0
    fields = ("user", "group", "role")
    readonly_fields = ("user", "group", "role")
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Collection)
class CollectionAdmin(admin.ModelAdmin[Collection]):
    list_display = ("slug", "name", "budget_tokens_per_month", "legal_hold", "created_at")
    search_fields = ("slug", "name")
    inlines = [MembershipInline]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return ("slug",) if obj else ()

    def save_model(self, request: HttpRequest, obj: Collection, form: Any, change: bool) -> None:
        if change:
            kb_services.collection_update(
                collection=obj,
                actor=session_principal(request),
                **{name: form.cleaned_data[name] for name in form.changed_data},
            )
        else:
            created, _ = kb_services.collection_create(
                slug=obj.slug,
                name=obj.name,
                description=obj.description,
                actor=session_principal(request),
            )
            obj.pk = created.pk

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super().has_delete_permission(request, obj) and not (obj and obj.legal_hold)

    def delete_model(self, request: HttpRequest, obj: Collection) -> None:
        ingest_services.collection_delete(collection=obj, actor=session_principal(request))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Collection]) -> None:
        for collection in queryset:
            try:
                self.delete_model(request, collection)
            except kb_services.CollectionOnHold as held:
                self.message_user(request, str(held), messages.ERROR)
