"""A sentence-transformers model run by ONNX Runtime: the same vectors, faster on a CPU.

On two CPU cores ONNX Runtime embeds MiniLM's passages 1.2x to 2.8x faster than
PyTorch, by machine (bench/README.md), with vectors equal to sentence-transformers' to
a cosine of 0.9999. The model is exported once from its local folder with torch's
exporter into `KB_MODEL_CACHE_DIR`; later loads need no torch. Only
plain models qualify (a Transformer, then mean or [CLS] pooling, then an optional
Normalize); any other runs in sentence-transformers.
"""

import fcntl
import functools
import hashlib
import json
import os
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from onnxruntime import InferenceSession

_PLAIN_MODULES = {"Transformer", "Pooling", "Normalize"}
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def _pooling(model_dir: Path) -> str | None:
    """'mean' or 'cls' for a plain model, None for one this module cannot reproduce."""
    try:
        modules = json.loads((model_dir / "modules.json").read_text())
    except (OSError, ValueError):
        return None
    # sentence_transformers.models.Pooling until version 5, and from version 6
    # sentence_transformers.sentence_transformer.modules.pooling.Pooling.
    kinds = [
        m.get("type", "").rpartition(".")[2]
        if m.get("type", "").startswith("sentence_transformers.")
        else None
        for m in modules
    ]
    if set(kinds) - _PLAIN_MODULES or kinds.count("Pooling") != 1:
        return None
    if not (model_dir / "tokenizer.json").is_file():
        return None
    pooling = modules[kinds.index("Pooling")]
    config = json.loads((model_dir / pooling["path"] / "config.json").read_text())
    mode = config.get("pooling_mode")  # version 6; before, a flag for each mode
    if mode is None:
        flags = {k for k, v in config.items() if k.startswith("pooling_mode") and v}
        mode = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls"}.get(
            flags.pop() if len(flags) == 1 else ""
        )
    return mode if mode in ("mean", "cls") else None


def supported(model_dir: Path) -> bool:
    return _pooling(model_dir) is not None


def _fingerprint(model_dir: Path) -> str:
    """Names the export after the model's files (name, size, time), so a changed model
    is exported again; reading 90 MB of weights at every start would cost more."""
    digest = hashlib.sha256()
    for name in sorted(os.listdir(model_dir)):
        if name.endswith((".safetensors", ".bin", ".json")):
            stat = (model_dir / name).stat()
            digest.update(f"{name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()[:16]


# Bumped when the export changes, so that an export made by older code is made again.
_EXPORT_VERSION = 2


def _export(model_dir: Path, target: Path) -> None:
    """Trace the model's transformer into an ONNX graph with dynamic batch and length.

    Attention is traced from transformers' plain ("eager") code, not torch's fused
    scaled_dot_product_attention, whose graph masks every attention score: ONNX Runtime
    runs the eager graph in 13% to 25% less time, to the same vectors (measured on the
    corpus' passages and on SciFact's).
    """
    import torch
    from sentence_transformers import SentenceTransformer

    transformer: Any = SentenceTransformer(
        str(model_dir),
        device="cpu",
        local_files_only=True,
        model_kwargs={"attn_implementation": "eager"},
    )[0]

    tokenizer: Any = transformer.tokenizer
    sample = tokenizer(["an example"], return_tensors="pt")
    # BERT's tokenizers give token types; MPNet's and RoBERTa's do not, and their models
    # take none: the graph takes what the tokenizer gives.
    names = [name for name in _INPUTS if name in sample]

    class Hidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model: Any = transformer.auto_model

        def forward(self, *inputs: Any) -> Any:
            return self.model(**dict(zip(names, inputs, strict=True))).last_hidden_state

    partial = target.with_suffix(f".{os.getpid()}.partial")
    axes = {name: {0: "batch", 1: "length"} for name in (*names, "hidden")}
    with warnings.catch_warnings():  # the tracer's notes on shapes fixed for this model
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Hidden().eval(),
            tuple(sample[name] for name in names),
            str(partial),
            input_names=names,
            output_names=["hidden"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
    os.replace(partial, target)  # whole or not at all: a reader never sees half a file


def exported(model_dir: Path, cache_dir: Path) -> Path:
    """The model's ONNX file, exported on first use; one process exports, others wait."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / f"{model_dir.name}-{_fingerprint(model_dir)}-v{_EXPORT_VERSION}.onnx"
    if target.is_file():
        return target
    with (cache_dir / f"{target.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.is_file():
            _export(model_dir, target)
            # An export of the model's earlier files, or by earlier code, is not used again.
            for stale in cache_dir.glob(f"{model_dir.name}-*.onnx"):
                if stale != target:
                    stale.unlink(missing_ok=True)
    return target


@functools.cache
def _shared_arena() -> None:
    """One memory arena for every session of this process. Runs go one at a time, so it
    never holds more than one run needs; with an arena each, a one-thread and a
    two-thread session held 1,075 MB against 710 MB shared, at the same speed (measured)."""
    import onnxruntime

    memory = onnxruntime.OrtMemoryInfo(
        "Cpu", onnxruntime.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, onnxruntime.OrtMemType.DEFAULT
    )
    onnxruntime.create_and_register_allocator(memory, onnxruntime.OrtArenaCfg(0, -1, -1, -1))


class OnnxEncoder:
    def __init__(
        self,
        model_dir: Path,
        onnx_file: Path,
        *,
        max_length: int,
        dimensions: int,
        threads: Callable[[], int] = lambda: 0,
    ) -> None:
        from tokenizers import Tokenizer

        self.pooling = _pooling(model_dir)
        self.dimensions = dimensions
        self.onnx_file = onnx_file
        # Threads for the next batch (0: one per core). A session's thread count is fixed,
        # so each count asked for gets a session of its own, made on first use.
        self.threads = threads
        self._sessions: dict[int, InferenceSession] = {}
        self.tokenizer: Tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=max_length)
        self.tokenizer.no_padding()
        # A model that cannot load fails here, not mid-document.
        self.inputs = [i.name for i in self._session(threads()).get_inputs()]
        # One batch at a time: a run already uses every core it was given, and two at
        # once (worker threads, web queries) would make their spinning threads fight over
        # them. A batch is short, so a search query waits for one batch at most.
        self._running = threading.Lock()

    def _session(self, threads: int) -> "InferenceSession":
        import onnxruntime

        if threads not in self._sessions:
            _shared_arena()
            options = onnxruntime.SessionOptions()
            options.add_session_config_entry("session.use_env_allocators", "1")
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.log_severity_level = 3
            options.intra_op_num_threads = threads
            self._sessions[threads] = onnxruntime.InferenceSession(
                str(self.onnx_file), options, providers=["CPUExecutionProvider"]
            )
        return self._sessions[threads]

    def encode(self, texts: list[str], batch_size: int) -> "np.ndarray":
        """Unit-length vectors. Texts go longest first, so a batch pads little."""
        import numpy as np

        encodings = self.tokenizer.encode_batch(texts)
        order = sorted(range(len(texts)), key=lambda i: -len(encodings[i].ids))
        vectors = np.zeros((len(texts), self.dimensions), np.float32)
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            vectors[rows] = self._batch([encodings[i] for i in rows])
        return vectors

    def _batch(self, encodings: list[Any]) -> "np.ndarray":
        import numpy as np

        width = max(len(e.ids) for e in encodings)
        inputs = {name: np.zeros((len(encodings), width), np.int64) for name in self.inputs}
        for row, encoding in enumerate(encodings):
            size = len(encoding.ids)
            inputs["input_ids"][row, :size] = encoding.ids
            inputs["attention_mask"][row, :size] = 1
            if "token_type_ids" in inputs:
                inputs["token_type_ids"][row, :size] = encoding.type_ids
        with self._running:
            hidden = self._session(self.threads()).run(None, inputs)[0]
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            weights = inputs["attention_mask"][..., None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        result: np.ndarray = pooled / np.clip(norms, 1e-12, None)
        return result
