"""Nothing leaves the machine: ingestion of every format and a question, traced.

Run in a child process under strace, which sees what native code does too (ONNX
Runtime's telemetry lookup is C++, out of reach of a Python socket patch): every
connect or send to an address off loopback, a DNS server included, is counted.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from tests import files

SCRIPT = """
import os, sys
os.environ["DJANGO_SETTINGS_MODULE"] = "server.settings"
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from kb.audit import GENESIS, SYSTEM
from kb.services import collection_create, user_create
from kb.models import Role
collection = collection_create(slug="hr", name="HR", actor=SYSTEM)[0]
call_command("ingest_folder", "hr", sys.argv[1], "--wait")
from django.contrib.auth.models import User
from kb.principal import Principal
from retrieval.services import question_answer
admin = User.objects.create_superuser("root", password="x")
answer = question_answer(
    principal=Principal(user=admin),
    question="Where are parking permits issued?",
    collections=["hr"],
)
print("passages:", len(answer.passages))
print("unavailable:", bool(answer.unavailable))
"""
# connect/sendto/sendmsg with an IPv4 or IPv6 address, as strace prints them.
ADDRESS = re.compile(r'inet_addr\("([0-9.]+)"\)|inet_pton\(AF_INET6, "([0-9a-f:.]+)"')


def off_machine(trace: str) -> list[str]:
    found = []
    for line in trace.splitlines():
        for v4, v6 in ADDRESS.findall(line):
            address = v4 or v6
            if not (address.startswith("127.") or address in ("::1", "::")):
                found.append(line.strip())
    return found


def test_the_off_machine_check_sees_a_lookup():
    line = (
        "123 connect(5, {sa_family=AF_INET, sin_port=htons(53), "
        'sin_addr=inet_addr("10.255.255.53")}, 16) = 0'
    )
    assert off_machine(line) == [line]
    assert off_machine(line.replace("10.255.255.53", "127.0.0.1")) == []


@pytest.mark.skipif(sys.platform != "linux", reason="strace is Linux's")
def test_ingestion_and_a_question_make_no_connection_off_this_machine(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    for kind in sorted(files.FACTS):
        files.make(kind, folder)
    trace = tmp_path / "trace"
    # The model's endpoint is on loopback and down: the question still asks it.
    env = {
        "PATH": "/usr/bin:/bin",
        "KB_DATA_DIR": str(tmp_path / "data"),
        "KB_MODEL_CACHE_DIR": str(settings.KB_MODEL_CACHE_DIR),
        "LLM_BASE_URL": "http://127.0.0.1:9/v1",
        "LLM_MODEL": "any",
    }
    result = subprocess.run(
        [
            "strace",
            "-f",
            "-qq",
            "-e",
            "trace=connect,sendto,sendmsg",
            "-o",
            str(trace),
            sys.executable,
            "-c",
            SCRIPT,
            str(folder),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"ready={len(files.FACTS)} failed=0" in result.stdout, result.stdout
    assert "passages: 0" not in result.stdout
    assert off_machine(trace.read_text()) == []
