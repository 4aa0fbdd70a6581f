"""The embedded default's model (KB_LOCAL_MODEL, retrieval.local_models: SmolLM2-135M
unless set) behind llama.cpp's OpenAI-compatible server on 127.0.0.1, reached by the
same client code as vLLM.

SmolLM2 is small and weak: it shows the whole flow on any laptop; the bundled Qwen2.5
models answer better, slower; answers worth trusting come from a bigger model
(LLM_BASE_URL)."""

import logging
import os
import subprocess
import sys
import time

import httpx
from django.conf import settings

from retrieval.local_models import LocalModel, local_model

logger = logging.getLogger(__name__)


# Runs llama.cpp's server in the child, and ends the child when its parent is gone,
# however the parent died (a SIGKILLed kb left its model server running, and the next
# kb used it). Polling the parent id works from any thread; PR_SET_PDEATHSIG would fire
# when the starting thread ends.
_CHILD = """
import os, runpy, sys, threading, time
parent = int(sys.argv.pop(1))
def watch():
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)
threading.Thread(target=watch, daemon=True).start()
sys.argv[0] = "llama_cpp.server"
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
"""


class PortTaken(RuntimeError):
    """A model server that this process did not start answers on the port."""


def _answering(url: str) -> bool:
    try:
        httpx.get(f"{url}/models", timeout=1).raise_for_status()
    except httpx.HTTPError:
        return False
    return True


class LocalLlm:
    def __init__(
        self,
        port: int,
        *,
        model: LocalModel | None = None,
        threads: tuple[int, int] | None = None,
        startup_seconds: float = 120,
    ) -> None:
        """Serves `model`, or KB_LOCAL_MODEL's (ModelUnavailable says why it cannot).
        `threads`: (generation, prompt) threads; llama.cpp's defaults without."""
        self.model = model or local_model()
        self.url = f"http://127.0.0.1:{port}/v1"
        if _answering(self.url):
            raise PortTaken(
                f"a model server that this kb did not start answers at {self.url} (left by "
                "a kb that was killed, or another program): stop it, or set "
                "KB_LOCAL_LLM_PORT to a free port"
            )
        self.process = subprocess.Popen(  # noqa: S603 (our own interpreter and arguments)
            [
                sys.executable,
                "-c",
                _CHILD,
                str(os.getpid()),
                "--model",
                str(self.model.path),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--n_ctx",
                "8192",
                "--model_alias",
                self.model.name,
                "--verbose",
                "False",
                # Its default ends a stream early, as if complete, when another request
                # arrives: with two people asking at once, one got an empty answer. Queue.
                "--interrupt_requests",
                "False",
                *(
                    ["--n_threads", str(threads[0]), "--n_threads_batch", str(threads[1])]
                    if threads
                    else []
                ),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + startup_seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the local model server exited ({self.process.returncode})")
            if _answering(self.url):
                logger.info("local model %s answering at %s", self.model.name, self.url)
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the local model server did not answer at {self.url}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def local_llms_start() -> list[LocalLlm]:
    """KB_LOCAL_LLM_SERVERS servers of the bundled model on consecutive ports from
    KB_LOCAL_LLM_PORT (settings.LLM_BASE_URLS names them), the cores shared out: each of
    several gets its part for reading prompts and half of it for writing, as one server
    on all the cores does by default. All start, or none is left running."""
    count = settings.KB_LOCAL_LLM_SERVERS
    cores = len(os.sched_getaffinity(0))
    threads = None if count == 1 else (max(1, cores // (2 * count)), max(1, cores // count))
    started: list[LocalLlm] = []
    try:
        for n in range(count):
            started.append(LocalLlm(settings.KB_LOCAL_LLM_PORT + n, threads=threads))
    except BaseException:
        for server in started:
            server.stop()
        raise
    return started
