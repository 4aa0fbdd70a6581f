from django.contrib import admin
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.urls import path

from kb.api import api
from retrieval import views as retrieval_views


def health(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"status": "ok"})


def home(request: HttpRequest) -> HttpResponse:
    return redirect("admin:index")


urlpatterns = [
    path("", home, name="home"),
    path("healthz", health, name="health"),
    path("admin/", admin.site.urls),
    path("api/v1/", api.urls),
    path("passages/<int:chunk_id>", retrieval_views.passage, name="passage"),
    path(
        "documents/<int:document_id>/download",
        retrieval_views.document_download,
        name="document-download",
    ),
]
