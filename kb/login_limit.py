"""Failed logins slow an attacker down: after too many for one user name, or from one
address, within the window, the login form refuses to check passwords for a while."""

from django.conf import settings
from django.core.cache import cache


def _keys(client_ip: str, username: str) -> list[tuple[str, int]]:
    return [
        (f"kb:login:user:{username.strip().lower()[:150]}", settings.KB_LOGIN_MAX_FAILURES),
        (f"kb:login:ip:{client_ip}", settings.KB_LOGIN_MAX_FAILURES_PER_IP),
    ]


def login_blocked(client_ip: str, username: str) -> bool:
    return any(cache.get(key, 0) >= limit for key, limit in _keys(client_ip, username))


def login_failed(client_ip: str, username: str) -> None:
    for key, _ in _keys(client_ip, username):
        cache.add(key, 0, timeout=settings.KB_LOGIN_WINDOW_SECONDS)
        try:
            cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.set(key, 1, timeout=settings.KB_LOGIN_WINDOW_SECONDS)


def login_succeeded(username: str) -> None:
    cache.delete(_keys("", username)[0][0])
