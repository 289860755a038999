"""The tcmalloc preload of the ``almost`` command (allocator.py): when it re-executes, and under what."""

import os
import subprocess
import sys

import pytest

from almost import allocator

LIBRARY = "/opt/lib/libtcmalloc_minimal.so.4"


def found():
    return LIBRARY


def test_preloads_a_found_library_once_and_silences_large_alloc_lines():
    environment = allocator.preload_environment({"PATH": "/bin"}, "linux", has_nvidia_gpu=False, find_library=found)
    assert environment == {"PATH": "/bin", "LD_PRELOAD": LIBRARY, allocator.LARGE_ALLOC_REPORT: allocator.NEVER_REPORT}
    # After the re-exec the library is in LD_PRELOAD: no second re-exec.
    assert allocator.preload_environment(environment, "linux", has_nvidia_gpu=False, find_library=found) is None


def test_keeps_the_users_preloads_and_threshold():
    environ = {"LD_PRELOAD": "/x/libiomp5.so", allocator.LARGE_ALLOC_REPORT: "4096"}
    environment = allocator.preload_environment(environ, "linux", has_nvidia_gpu=False, find_library=found)
    assert environment["LD_PRELOAD"] == f"{LIBRARY}:/x/libiomp5.so"
    assert environment[allocator.LARGE_ALLOC_REPORT] == "4096"


@pytest.mark.parametrize(
    "environ, platform, gpu, library",
    [
        ({}, "linux", False, None),  # nothing found: nothing changes
        ({}, "darwin", False, LIBRARY),
        ({}, "linux", True, LIBRARY),  # GPU machines keep their allocator, as vLLM does there
        ({"ALMOST_TCMALLOC": "0"}, "linux", False, LIBRARY),
        ({"LD_PRELOAD": "/usr/lib/libtcmalloc.so.4"}, "linux", False, LIBRARY),  # the user's own tcmalloc
    ],
)
def test_runs_as_it_is(environ, platform, gpu, library):
    assert allocator.preload_environment(environ, platform, has_nvidia_gpu=gpu, find_library=lambda: library) is None


def test_a_command_that_runs_as_it_is_spares_its_children_the_search(monkeypatch):
    searches = []
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.delenv(allocator.OPT_OUT, raising=False)
    monkeypatch.setattr(allocator, "find_tcmalloc", lambda: searches.append(1))
    monkeypatch.setattr(allocator.os.path, "exists", lambda path: False)  # no NVIDIA device either
    monkeypatch.setattr(allocator.sys, "platform", "linux")
    allocator.reexec_with_tcmalloc()  # nothing found: returns
    assert searches == [1] and os.environ[allocator.OPT_OUT] == "0"
    allocator.reexec_with_tcmalloc()  # as a child would: the marker answers
    assert searches == [1]


@pytest.mark.skipif(not sys.platform.startswith("linux") or allocator.find_tcmalloc() is None, reason="no tcmalloc on this machine")
def test_the_command_reexecutes_itself_under_tcmalloc():
    probe = (
        "import sys; sys.argv = ['almost', '--help']; "
        "from almost.allocator import reexec_with_tcmalloc; reexec_with_tcmalloc(); print('not re-executed')"
    )
    environ = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", allocator.OPT_OUT)}
    out = subprocess.run([sys.executable, "-c", probe], env=environ, capture_output=True, text=True, check=True)
    # The process became `python -m almost --help`, and the loader took the library (it says so when it cannot).
    assert "usage: almost" in out.stdout and "not re-executed" not in out.stdout
    assert "cannot be preloaded" not in out.stderr
