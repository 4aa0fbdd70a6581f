from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import include, path

from kb import admin_views, views
from kb.api import api


def health(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"status": "ok"})


urlpatterns = [
    path("healthz", health, name="health"),
    # One login page for everyone, the rate-limited one (the admin's included).
    path("login/", views.LoginView.as_view(), name="login"),
    path("admin/login/", views.LoginView.as_view()),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("api/v1/", api.urls),
    path("collections/", views.collections, name="collections"),
    path("collections/<slug:slug>/members", views.members, name="members"),
    path(
        "collections/<slug:slug>/members/<int:membership_id>/remove",
        views.member_remove,
        name="member-remove",
    ),
    path("collections/<slug:slug>/settings", views.collection_settings, name="collection-settings"),
    path("tokens/", views.tokens, name="tokens"),
    path("tokens/<int:token_id>/revoke", views.token_revoke, name="token-revoke"),
    path("audit/", admin_views.audit, name="audit"),
    path("audit/export", admin_views.audit_download, name="audit-export"),
    path("audit/<int:seq>", admin_views.audit_event, name="audit-event"),
    path("status/", admin_views.system_status, name="status"),
    path("", include("ingest.urls")),
    path("", include("retrieval.urls")),
]
