"""keep_freed_memory(): glibc keeps freed large blocks, so a repeated large allocation stops
page-faulting; the featmatch command switches it on unless FEATMATCH_KEEP_FREED_MEMORY=0."""

import os
import subprocess
import sys

import pytest

import featmatch
from featmatch.memory import keep_freed_memory

GLIBC = sys.platform.startswith("linux") and (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")

# page faults of a second 64 MB tensor filled after the first was freed, relative to the first
_PROBE = """
import resource, sys
import torch
import featmatch
if sys.argv[1] == "keep":
    assert featmatch.keep_freed_memory() is True
def faults():
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = torch.ones(16 * 2**20)
    t.add_(1)
    del t
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
first = faults()
again = min(faults() for _ in range(3))
print(again / max(first, 1))
"""


def _ratio(mode: str) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "GLIBC_TUNABLES", "THP_MEM_ALLOC_ENABLE")}
    res = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0, res.stderr
    return float(res.stdout.strip().splitlines()[-1])


def test_keep_freed_memory_is_exported_and_idempotent():
    assert featmatch.keep_freed_memory is keep_freed_memory
    first = keep_freed_memory()
    assert isinstance(first, bool) and keep_freed_memory() == first
    assert first == GLIBC


@pytest.mark.skipif(not GLIBC, reason="glibc malloc settings (Linux)")
def test_freed_large_blocks_are_reused_instead_of_faulting_in_again():
    assert _ratio("default") > 0.5  # glibc's default: munmap on free, the pages fault in again
    assert _ratio("keep") < 0.05  # kept: the second tensor reuses the first one's pages


_CLI = """
import sys
import featmatch.cli, featmatch.memory
code = featmatch.cli.main(["list"])
print(code, featmatch.memory._applied)
"""


@pytest.mark.skipif(not GLIBC, reason="glibc malloc settings (Linux)")
@pytest.mark.parametrize("value, applied", [(None, "True"), ("0", "False"), ("1", "True")])
def test_cli_keeps_freed_memory_unless_turned_off(value, applied):
    env = {k: v for k, v in os.environ.items() if k != "FEATMATCH_KEEP_FREED_MEMORY"}
    if value is not None:
        env["FEATMATCH_KEEP_FREED_MEMORY"] = value
    res = subprocess.run([sys.executable, "-c", _CLI], capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == f"0 {applied}"
