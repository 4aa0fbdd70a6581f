"""Login sessions in the database, each with its user's id in an indexed column, so that
deactivating a user ends every session of theirs with one DELETE instead of decoding
every session there is (Django's "extending database-backed session engines").
SESSION_ENGINE names this module."""

from typing import Any

from django.contrib.auth import SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore as DatabaseStore
from django.contrib.sessions.base_session import AbstractBaseSession


class SessionStore(DatabaseStore):
    @classmethod
    def get_model_class(cls) -> type[AbstractBaseSession]:
        from kb.models import UserSession

        return UserSession

    def create_model_instance(self, data: dict[str, Any]) -> AbstractBaseSession:
        session = super().create_model_instance(data)
        user_id = str(data.get(SESSION_KEY, ""))
        session.user_id = int(user_id) if user_id.isdigit() else None  # type: ignore[attr-defined]
        return session
