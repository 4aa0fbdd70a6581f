"""The embedding backends: ONNX Runtime gives sentence-transformers' vectors."""

import json
import shutil

import numpy as np
import pytest

from ingest import cpu, embedder, onnx_encoder

TEXTS = [
    "Every employee receives twenty-eight days of paid holiday per year.",
    "VPN",
    "",
    # Longer than the model's window: both cut it at the same word piece.
    " ".join(f"clause {n} of the travel policy applies to contractors" for n in range(80)),
    "Die Reisekostenrichtlinie gilt auch für Auftragnehmer.",
]


def test_onnx_runtime_gives_the_vectors_sentence_transformers_gives(settings, tmp_path):
    from sentence_transformers import SentenceTransformer

    settings.KB_MODEL_CACHE_DIR = tmp_path / "models"
    settings.KB_MODEL_CACHE_DIR.mkdir()
    older = settings.KB_MODEL_CACHE_DIR / f"{embedder.model_path().name}-0123456789abcdef.onnx"
    older.write_bytes(b"an export by earlier code")
    onnx_file = onnx_encoder.exported(embedder.model_path(), settings.KB_MODEL_CACHE_DIR)
    assert onnx_file.parent == tmp_path / "models"
    assert not older.exists()  # replaced, not left to fill the disk
    counts = iter([1, 1, 2, 1, 2])  # the first for loading, then one per batch
    encoder = onnx_encoder.OnnxEncoder(
        embedder.model_path(),
        onnx_file,
        max_length=embedder.max_tokens(),
        dimensions=embedder.dimensions(),
        threads=lambda: next(counts),
    )
    got = encoder.encode(TEXTS, batch_size=2)  # mixed lengths share a padded batch
    assert sorted(encoder._sessions) == [1, 2]  # batches ran on one thread and on two
    reference = SentenceTransformer(str(embedder.model_path()), device="cpu").encode(
        TEXTS, normalize_embeddings=True
    )
    assert got.shape == (len(TEXTS), 384)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert (got * reference).sum(axis=1).min() > 0.9999
    # A second load reuses the export.
    assert onnx_encoder.exported(embedder.model_path(), settings.KB_MODEL_CACHE_DIR) == onnx_file


def test_embedding_leaves_a_parse_in_the_same_process_a_core(settings):
    settings.KB_EMBEDDING_THREADS = 4
    assert embedder._threads() == 4
    with cpu.parse_running():
        assert embedder._threads() == 3
        with cpu.parse_running():  # two parses share one GIL, so they need one core between them
            assert embedder._threads() == 3
    assert embedder._threads() == 4
    settings.KB_EMBEDDING_THREADS = 1
    with cpu.parse_running():
        assert embedder._threads() == 1


def test_default_backend_on_a_cpu_is_onnx_runtime(settings):
    settings.KB_EMBEDDING_BACKEND = "auto"
    settings.KB_EMBEDDING_DEVICE = "cpu"
    assert embedder.backend() == "onnx"
    settings.KB_EMBEDDING_DEVICE = "cuda"
    assert embedder.backend() == "torch"


@pytest.mark.parametrize(
    ("change", "supported"),
    [
        (lambda modules, pooling: None, True),
        (
            lambda modules, pooling: modules.append({"type": "sentence_transformers.models.Dense"}),
            False,
        ),
        (lambda modules, pooling: pooling.update(pooling_mode_max_tokens=True), False),
        (
            lambda modules, pooling: pooling.update(
                pooling_mode_mean_tokens=False, pooling_mode_cls_token=True
            ),
            True,
        ),
    ],
)
def test_models_onnx_cannot_reproduce_stay_on_sentence_transformers(tmp_path, change, supported):
    folder = tmp_path / "model"
    shutil.copytree(embedder.model_path(), folder, ignore=shutil.ignore_patterns("*.safetensors"))
    modules = json.loads((folder / "modules.json").read_text())
    pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
    change(modules, pooling)
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    assert onnx_encoder.supported(folder) is supported


def test_a_model_saved_by_todays_sentence_transformers_without_token_types_runs_in_onnx(
    settings, tmp_path
):
    # MPNet's tokenizers (all-mpnet-base-v2), RoBERTa's and XLM-R's give no token types,
    # and their models take none: the export asked for BERT's three inputs and every
    # embedding failed with KeyError 'token_type_ids'. And sentence-transformers 6 saves
    # a model in a new layout (module names, pooling mode, window with the tokenizer):
    # such a model left ONNX Runtime, and its window was a KeyError.
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import MPNetConfig, MPNetModel

    base = tmp_path / "base"
    torch.manual_seed(0)
    config = MPNetConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        pad_token_id=0,
    )
    MPNetModel(config).save_pretrained(base)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(embedder.model_path() / name, base / name)
    tokenizer_config = json.loads((base / "tokenizer_config.json").read_text())
    tokenizer_config["model_input_names"] = ["input_ids", "attention_mask"]  # as MPNet's
    (base / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    folder = tmp_path / "tiny-mpnet"
    transformer = Transformer(str(base), max_seq_length=128)
    pooling = Pooling(32, pooling_mode="mean")
    modules = [transformer, pooling, Normalize()]
    SentenceTransformer(modules=modules, device="cpu").save(str(folder))

    assert onnx_encoder.supported(folder)
    settings.KB_EMBEDDING_MODEL_PATH = str(folder)
    embedder.max_tokens.cache_clear()
    try:
        assert embedder.max_tokens() == 128
    finally:
        embedder.max_tokens.cache_clear()

    onnx_file = onnx_encoder.exported(folder, tmp_path / "models")
    encoder = onnx_encoder.OnnxEncoder(folder, onnx_file, max_length=128, dimensions=32)
    assert encoder.inputs == ["input_ids", "attention_mask"]
    got = encoder.encode(TEXTS, batch_size=2)
    reference = SentenceTransformer(str(folder), device="cpu").encode(
        TEXTS, normalize_embeddings=True
    )
    assert (got * reference).sum(axis=1).min() > 0.9999
