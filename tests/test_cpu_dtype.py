"""The dtype every automatic choice takes on the three kinds of CPU that run CI, from their flags.

vLLM's ``--dtype auto``, inference autocast (``inference_precision``) and training's ``--bf16`` all
decide through ``models.cpu_bf16_is_fast``, which reads the CPU's flags: bf16 where it is native,
fp32 elsewhere. The flag lines are the machines' own (``/proc/cpuinfo``), so no such hardware is needed.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from almost import models
from almost.config import resolve_training_hardware
from almost.engines.vllm import vllm_dtype

COMMON = (
    "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht syscall nx pdpe1gb "
    "rdtscp lm constant_tsc rep_good nopl xtopology nonstop_tsc cpuid tsc_known_freq pni pclmulqdq ssse3 fma cx16 pcid sse4_1 "
    "sse4_2 x2apic movbe popcnt tsc_deadline_timer aes xsave avx f16c rdrand hypervisor lahf_lm abm 3dnowprefetch fsgsbase "
    "tsc_adjust bmi1 avx2 smep bmi2 erms invpcid rdseed adx smap clflushopt clwb sha_ni xsaveopt xsavec xgetbv1 xsaves "
    "vaes vpclmulqdq rdpid fsrm arat umip"
)
AVX512 = "avx512f avx512dq avx512ifma avx512cd avx512bw avx512vl avx512vbmi avx512_vbmi2 gfni avx512_vnni avx512_bitalg avx512_vpopcntdq"
CPUS = {
    # Intel Xeon (Sapphire Rapids, family 6 model 143/207): AMX tiles and AVX512-BF16.
    "intel-amx": f"{COMMON} {AVX512} avx_vnni avx512_bf16 wbnoinvd avx512_fp16 amx_bf16 amx_tile amx_int8 arch_capabilities",
    # AMD EPYC Zen 4 (family 25 model 17): AVX512-BF16, no AMX.
    "amd-zen4": f"{COMMON} {AVX512} mmxext fxsr_opt cmp_legacy cr8_legacy sse4a misalignsse topoext avx512_bf16 clzero xsaveerptr",
    # AMD EPYC without AVX-512 (family 25 model 1, the AVX2 development machine): no native bf16.
    "avx2": f"{COMMON} mmxext fxsr_opt cmp_legacy cr8_legacy sse4a misalignsse topoext clzero xsaveerptr",
}
NATIVE_BF16 = {"intel-amx": True, "amd-zen4": True, "avx2": False}


@pytest.fixture(params=sorted(CPUS))
def cpu(request, tmp_path, monkeypatch):
    """One of the three CPUs, as its /proc/cpuinfo says, and no GPU."""
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nvendor_id\t: x\nflags\t\t: {CPUS[request.param]}\nbogomips\t: 4890.83\n\n")
    flags = models.cpu_flags(str(cpuinfo))
    monkeypatch.setattr(models, "cpu_flags", lambda: flags)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    monkeypatch.delenv(models.CPU_BF16_ENV, raising=False)  # the suite's own fp32 setting (conftest.py)
    return request.param


def test_native_bf16_is_read_from_the_flags(cpu):
    assert models.cpu_bf16_is_fast() is NATIVE_BF16[cpu]


def test_vllm_runs_bf16_only_where_the_cpu_computes_it(cpu):
    # Elsewhere vLLM's CPU kernels emulate bf16: 3.5x slower than fp32 (docs/feedback.md).
    assert vllm_dtype("auto", on_gpu=False) == ("bfloat16" if NATIVE_BF16[cpu] else "float32")
    assert vllm_dtype("float32", on_gpu=False) == "float32"  # asked for is what runs
    assert vllm_dtype("bfloat16", on_gpu=False) == "bfloat16"


def test_inference_autocasts_to_bf16_only_where_the_cpu_computes_it(cpu):
    import torch

    auto = models.inference_precision("auto")
    assert (auto.device, auto.load_dtype, auto.autocast_bf16) == ("cpu", torch.float32, NATIVE_BF16[cpu])
    assert models.inference_precision("float32").autocast_bf16 is False
    assert models.inference_precision("bfloat16").autocast_bf16 is True


def test_training_bf16_follows_the_cpu_unless_set(cpu, monkeypatch):
    monkeypatch.setattr("torch.accelerator.is_available", lambda: False)
    auto = SimpleNamespace(use_cpu=False, gradient_checkpointing=None, bf16=None)
    resolve_training_hardware(auto)
    assert (auto.use_cpu, auto.bf16, auto.gradient_checkpointing) == (True, NATIVE_BF16[cpu], False)
    asked = SimpleNamespace(use_cpu=False, gradient_checkpointing=None, bf16=False)
    resolve_training_hardware(asked)
    assert asked.bf16 is False


def test_the_variable_keeps_every_cpu_on_fp32(cpu, monkeypatch):
    monkeypatch.setenv(models.CPU_BF16_ENV, "0")
    assert models.cpu_bf16_is_fast() is False
    assert vllm_dtype("auto", on_gpu=False) == "float32" and models.inference_precision("auto").autocast_bf16 is False


def test_no_cpuinfo_counts_as_no_native_bf16(tmp_path):
    assert models.cpu_flags(str(tmp_path / "missing")) == frozenset()
    assert models.cpu_bf16_is_fast(frozenset()) is False


def test_gpus_keep_the_checkpoints_dtype():
    assert vllm_dtype("auto", on_gpu=True) == "auto"
