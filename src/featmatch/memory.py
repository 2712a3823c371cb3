"""Host memory allocator settings for CPU inference and training.

PyTorch's CPU tensors come from the C library's ``malloc``. glibc serves blocks above a
threshold (128 KB to 32 MB, adapting) with ``mmap`` and gives them back with ``munmap`` when
they are freed, and trims the top of its heap, so each large temporary of a forward pass
(LoFTR's attention and score matrices, DRC-Net's correlation volumes, LIFT's score maps) is
fresh memory whose pages fault in again on every call: ~90,000 minor page faults per
640x480 pair for ``loftr.tiny``, ~3 million for ``drcnet.xfeat``.
:func:`keep_freed_memory` tells glibc to keep freed blocks for reuse instead, the same effect
as preloading tcmalloc or jemalloc but switchable at run time. The ``featmatch`` command
calls it at start (``FEATMATCH_KEEP_FREED_MEMORY=0`` turns that off); library users call it
themselves, since it changes the whole process. Measured in ``benchmarks/bench_allocator.py``
(variant ``keep-freed``) and docs/cli.md.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

log = logging.getLogger(__name__)

#: ``mallopt`` parameters of glibc's ``<malloc.h>``
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
#: the largest value ``mallopt`` takes (its argument is a C int): 2 GB of free heap top kept
KEEP_BYTES = 2**31 - 1

_applied = False


def keep_freed_memory() -> bool:
    """Make glibc's ``malloc`` keep freed memory for reuse: no ``mmap`` for large blocks
    (``M_MMAP_MAX = 0``) and no trimming of the heap top (``M_TRIM_THRESHOLD`` = 2 GB).

    Freed blocks of any size then serve later requests of the process, so repeated calls
    (``model.match`` over many pairs, training steps) stop paying page faults for their large
    temporaries: ``drcnet.xfeat`` 1.25x, ``aliked.n16+lightglue`` 1.19x, ``loftr.tiny`` 1.15x,
    ``lift`` 1.04x per 640x480 pair here, XFeat unchanged, with the same outputs and a peak
    RSS within ~10 % (docs/cli.md). Memory freed by the process is not returned to the
    system until it exits (it stays available to the process). The settings are
    process-wide and stay until exit; calling again does nothing.

    Returns:
        True if the settings are in effect (Linux with glibc), False where there is nothing
        to set (macOS, Windows, musl) or glibc refused them; never raises.
    """
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc_name = os.confstr("CS_GNU_LIBC_VERSION") or ""  # "glibc 2.36"; unset on musl
    except (ValueError, OSError, AttributeError):
        return False
    if not libc_name.startswith("glibc"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    ok = mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, KEEP_BYTES) == 1
    if ok:
        _applied = True
        log.debug("glibc malloc: keeping freed memory (M_MMAP_MAX=0, M_TRIM_THRESHOLD=%d)", KEEP_BYTES)
    return ok
