from django.urls import path

from ingest import views

urlpatterns = [
    path("collections/", views.collections, name="collections"),
    path("collections/<slug:slug>/", views.collection, name="collection"),
    path("collections/<slug:slug>/documents", views.documents_table, name="documents-table"),
    path("collections/<slug:slug>/upload", views.upload, name="upload"),
    path(
        "documents/<id:document_id>/delete",
        views.document_action,
        {"action": "delete"},
        name="document-delete",
    ),
    path(
        "documents/<id:document_id>/reingest",
        views.document_action,
        {"action": "reingest"},
        name="document-reingest",
    ),
]
