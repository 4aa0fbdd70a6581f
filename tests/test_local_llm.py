"""The bundled model's server lives and dies with the kb process that started it."""

import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from retrieval.local_llm import LocalLlm, PortTaken
from tests.conftest import embedded_env, free_port, free_ports, kb_serve, manage

ROOT = Path(__file__).resolve().parent.parent


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purpose: it answers nothing and holds no port.
    status = Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1]
    return status != "Z"


def test_the_model_server_ends_when_its_kb_is_killed():
    port = free_port()
    code = (
        "import sys, time\n"
        "from retrieval.local_llm import LocalLlm\n"
        f"server = LocalLlm({port})\n"
        "print(server.process.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    assert alive(child)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 15
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive(child)


def test_a_model_server_it_did_not_start_is_refused_by_name():
    class Models(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b'{"data": []}')

        def log_message(self, *args):
            pass

    orphan = http.server.HTTPServer(("127.0.0.1", 0), Models)
    threading.Thread(target=orphan.serve_forever, daemon=True).start()
    try:
        with pytest.raises(PortTaken, match=r"did not start answers at http://127\.0\.0\.1:"):
            LocalLlm(orphan.server_address[1])
    finally:
        orphan.shutdown()


def test_questions_asked_at_once_each_get_the_whole_answer(local_llm):
    from concurrent.futures import ThreadPoolExecutor

    from retrieval.chat_client import OpenAIChat

    chat = OpenAIChat(local_llm, model="smollm2-135m", api_key="none")
    question = [{"role": "user", "content": "Name three colours of the rainbow."}]

    def answer(_: int) -> str:
        return "".join(chat.stream(question, max_tokens=24, stop=None))

    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(answer, range(3)))
    assert answers[0] and answers == [answers[0]] * 3


def test_serve_starts_the_model_servers_asked_for_and_they_end_with_it(tmp_path):
    port = free_ports(2)
    env = embedded_env(tmp_path, KB_LOCAL_LLM_SERVERS="2", KB_LOCAL_LLM_PORT=str(port))
    assert manage(env, "migrate", "--verbosity", "0").returncode == 0
    process, _ = kb_serve(env, tmp_path)
    urls = [f"http://127.0.0.1:{p}/v1" for p in (port, port + 1)]
    try:
        models = [httpx.get(f"{url}/models").json()["data"][0]["id"] for url in urls]
        assert models[0] == models[1] == env["KB_LOCAL_MODEL"]
    finally:
        process.terminate()
        process.wait(30)
    deadline = time.monotonic() + 15
    while any(answers(url) for url in urls) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(answers(url) for url in urls)


def answers(url: str) -> bool:
    try:
        httpx.get(f"{url}/models", timeout=1)
    except httpx.HTTPError:
        return False
    return True
