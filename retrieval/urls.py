from django.urls import path

from retrieval import views

urlpatterns = [
    path("", views.ask, name="ask"),
    path("conversations/<id:conversation_id>", views.conversation, name="conversation"),
    path("ask/stream", views.ask_stream, name="ask-stream"),
    path("answers/<str:query_id>/feedback", views.feedback, name="feedback"),
    path("search", views.search, name="search"),
    path("usage/", views.usage_page, name="usage"),
    path("collections/<slug:slug>/evaluation", views.evaluation_page, name="evaluation"),
    path("collections/<slug:slug>/evaluation/golden", views.golden_upload, name="golden-upload"),
    path(
        "collections/<slug:slug>/evaluation/golden/<int:question_id>",
        views.golden_answer,
        name="golden-answer",
    ),
    path(
        "collections/<slug:slug>/evaluation/feedback",
        views.golden_from_feedback,
        name="golden-from-feedback",
    ),
    path(
        "collections/<slug:slug>/evaluation/start",
        views.evaluation_start,
        name="evaluation-start",
    ),
    path("passages/<id:chunk_id>", views.passage, name="passage"),
    path("documents/<id:document_id>/download", views.document_download, name="document-download"),
]
