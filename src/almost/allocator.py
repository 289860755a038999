"""tcmalloc for the ``almost`` command on CPU machines, the allocator vLLM's CPU build asks for.

vLLM's CPU worker warns when libtcmalloc is not preloaded, and vLLM preloads it into the worker
processes it spawns. almost runs vLLM's engine core in its own process on CPU (engines/vllm.py), so
the preload has to happen before that process starts: ``almost`` re-executes itself once with
``LD_PRELOAD`` set when a tcmalloc library is found. Measured on the 2-core development machine
(docs/feedback.md), paired whole-process runs, alternating, medians of 4: a short vLLM job (engine
start, 32 two-shot prompts, 64 new tokens) 7% faster and 4% less peak memory; a short HF job (load,
sample, score) 5% faster; the same tokens either way (an allocator does not change arithmetic).

Where it looks: vLLM's bundled ``vllm/libs`` (some wheels carry one), then the system's
(``apt-get install libtcmalloc-minimal4`` on Debian/Ubuntu). Nothing found, nothing changes.
Machines with an NVIDIA GPU keep their allocator, as vLLM does there. ``ALMOST_TCMALLOC=0`` turns it off.
"""

from __future__ import annotations

import ctypes.util
import glob
import importlib.util
import os
import sys
from collections.abc import Callable, Mapping

OPT_OUT = "ALMOST_TCMALLOC"
# tcmalloc prints a line for every allocation above 1 GiB by default (vLLM's KV cache is one).
LARGE_ALLOC_REPORT = "TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD"
NEVER_REPORT = str(2**40)


def find_tcmalloc() -> str | None:
    """The path (or soname) of a tcmalloc library: vLLM's bundled one, else the system's."""
    spec = importlib.util.find_spec("vllm")  # finds the package without importing it (and torch)
    for package_dir in (spec.submodule_search_locations or []) if spec else []:
        for pattern in ("libtcmalloc_minimal*.so*", "libtcmalloc.so*"):
            if found := sorted(glob.glob(os.path.join(package_dir, "libs", pattern))):
                return found[0]
    return ctypes.util.find_library("tcmalloc_minimal") or ctypes.util.find_library("tcmalloc")


def preload_environment(
    environ: Mapping[str, str], platform: str, has_nvidia_gpu: bool, find_library: Callable[[], str | None]
) -> dict[str, str] | None:
    """The environment to re-execute under, or None when this process should run as it is."""
    preload = environ.get("LD_PRELOAD", "")
    if (
        not platform.startswith("linux")
        or has_nvidia_gpu
        or environ.get(OPT_OUT) == "0"
        # Already there: ours after the re-exec (so it happens once), or the user's own choice.
        or "libtcmalloc" in preload
    ):
        return None
    library = find_library()
    if library is None:
        return None
    return {
        **environ,
        "LD_PRELOAD": f"{library}:{preload}" if preload else library,
        LARGE_ALLOC_REPORT: environ.get(LARGE_ALLOC_REPORT, NEVER_REPORT),
    }


def reexec_with_tcmalloc(command: list[str] | None = None) -> None:
    """Replace this process with ``command`` (default: ``python -m almost <same arguments>``) under
    tcmalloc, when one is found and wanted (see the module docstring); otherwise return and change
    nothing. The benchmarks pass their own command line, so that they measure what ``almost`` runs."""
    environment = preload_environment(os.environ, sys.platform, os.path.exists("/dev/nvidiactl"), find_tcmalloc)
    if environment is None:
        # The processes this one starts (pipeline steps, a benchmark's sides) would reach the same
        # answer: spare each of them the search (``ldconfig -p`` when nothing is found).
        os.environ.setdefault(OPT_OUT, "0")
    else:
        command = command or [sys.executable, "-m", "almost", *sys.argv[1:]]
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(command[0], command, environment)


def tcmalloc_loaded() -> bool:
    """Whether this process runs on tcmalloc (a mapped library, not just the variable)."""
    try:
        with open("/proc/self/maps") as maps:
            return any("libtcmalloc" in line for line in maps)
    except OSError:
        return False
