from django.urls import path

from kb import views

urlpatterns = [
    path("collections/<slug:slug>/members", views.members, name="members"),
    path(
        "collections/<slug:slug>/members/<id:membership_id>/remove",
        views.member_remove,
        name="member-remove",
    ),
    path("collections/<slug:slug>/settings", views.collection_settings, name="collection-settings"),
    path("tokens/", views.tokens, name="tokens"),
    path("tokens/<id:token_id>/revoke", views.token_revoke, name="token-revoke"),
]
