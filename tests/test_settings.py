import pytest
from django.core.exceptions import ImproperlyConfigured

from server.env import env_bool, env_int, env_secret


def test_bad_values_fail_loudly_with_their_name(monkeypatch):
    monkeypatch.setenv("KB_FLAG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="KB_FLAG"):
        env_bool("KB_FLAG")
    monkeypatch.setenv("KB_NUMBER", "ten")
    with pytest.raises(ImproperlyConfigured, match="KB_NUMBER must be an integer"):
        env_int("KB_NUMBER", 1)
    monkeypatch.setenv("KB_NUMBER", "-3")
    with pytest.raises(ImproperlyConfigured, match="at least 0"):
        env_int("KB_NUMBER", 1, minimum=0)


def test_secret_from_a_file(monkeypatch, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("from-file\n")
    monkeypatch.delenv("KB_SECRET", raising=False)
    monkeypatch.setenv("KB_SECRET_FILE", str(secret))
    assert env_secret("KB_SECRET") == "from-file"
    monkeypatch.setenv("KB_SECRET_FILE", str(tmp_path / "missing"))
    with pytest.raises(ImproperlyConfigured, match="cannot read"):
        env_secret("KB_SECRET")
