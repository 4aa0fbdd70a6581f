"""Operators script these: idempotent, audited, and a clear error on bad input."""

import io
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError

from kb.models import AuditEvent, Membership


def run(command: str, *args: str, stdin: str | None = None) -> str:
    out = io.StringIO()
    if stdin is not None:
        sys.stdin = io.StringIO(stdin)
    try:
        call_command(command, *args, stdout=out, stderr=io.StringIO())
    finally:
        sys.stdin = sys.__stdin__
    return out.getvalue()


def test_provisioning_is_idempotent_and_audited(db):
    assert "created user dave" in run(
        "user_create", "dave", "--password-stdin", stdin="s3cret-pass\n"
    )
    assert "exists user dave" in run("user_create", "dave")
    assert User.objects.get(username="dave").check_password("s3cret-pass")
    assert "created collection ops" in run("collection_create", "ops", "--name", "Operations")
    assert "exists collection ops" in run("collection_create", "ops")
    assert "now editor" in run("member_add", "ops", "--user", "dave", "--role", "editor")
    assert "already editor" in run("member_add", "ops", "--user", "dave", "--role", "editor")
    assert "now owner" in run("member_add", "ops", "--user", "dave", "--role", "owner")
    assert Membership.objects.get(user__username="dave").role == 3
    assert "removed from" in run("member_remove", "ops", "--user", "dave")
    assert "was not a member" in run("member_remove", "ops", "--user", "dave")
    actions = list(AuditEvent.objects.values_list("action", flat=True))
    assert actions == [
        "user.create",
        "collection.create",
        "member.add",
        "member.add",
        "member.remove",
    ]
    assert (
        AuditEvent.objects.filter(actor_type="system", actor_name__startswith="cli:").count() == 5
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("member_add", "nope", "--user", "alice", "--role", "reader"), "no collection 'nope'"),
        (("member_add", "hr", "--user", "ghost", "--role", "reader"), "no user named 'ghost'"),
        (("member_add", "hr", "--group", "ghosts", "--role", "reader"), "no group named"),
        (("collection_create", "Not A Slug"), "lower-case letters"),
        (
            (
                "token_create",
                "--user",
                "alice",
                "--collections",
                "hr",
                "--scope",
                "read",
                "--expires",
                "soon",
            ),
            "not a date",
        ),
        (
            ("token_create", "--user", "charlie", "--collections", "hr", "--scope", "read"),
            "charlie cannot read hr",
        ),
        (("token_revoke", "abcdef"), "no token"),
        (("audit_prune", "--before", "yesterday"), "not a date"),
    ],
)
def test_bad_input_gives_a_clear_error(hr, args, message):
    with pytest.raises(CommandError, match=message):
        run(*args)


def test_bad_role_exits_non_zero_from_the_shell(tmp_path):
    result = subprocess.run(
        [sys.executable, "manage.py", "member_add", "hr", "--user", "x", "--role", "boss"],
        capture_output=True,
        text=True,
        env={"KB_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert result.returncode != 0
    assert "invalid choice: 'boss'" in result.stderr


def test_bootstrap_prints_the_admin_password_once(db):
    first = run("kb_bootstrap")
    password = first.split("password:")[1].split()[0]
    admin = User.objects.get(username="admin")
    assert admin.is_superuser and admin.check_password(password)
    assert run("kb_bootstrap") == ""


@pytest.mark.parametrize("command", [["collection_create", "x"], ["serve", "--port", "1"]])
def test_commands_on_a_database_never_migrated_say_to_migrate(tmp_path, command):
    result = subprocess.run(
        [sys.executable, "manage.py", *command],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "KB_DATA_DIR": str(tmp_path), "LLM_BASE_URL": "x"},
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert result.returncode == 1
    assert "run `python manage.py migrate` first" in result.stderr
    assert "Traceback" not in result.stderr
