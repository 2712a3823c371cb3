"""Memory allocator settings vs speed and memory, per featmatch model (CPU, Linux).

PyTorch's CPU tensors come from the C library's ``malloc``. glibc serves large blocks with
``mmap`` and returns them with ``munmap`` when freed, so every large temporary of a forward
pass (score maps, correlation volumes, im2col buffers) is fresh memory whose pages fault in on
first touch, call after call. Allocators that keep and reuse freed memory, or huge pages,
avoid part of that cost. The PyTorch CPU performance guide recommends jemalloc / tcmalloc for
this reason; this script measures what it is worth for each featmatch model, end to end
(``model.match(img0, img1)`` on 640x480 photo pairs), against the default in the same run:

* ``glibc``: the default (no ``LD_PRELOAD``, no tunables);
* ``thp``: ``THP_MEM_ALLOC_ENABLE=1``, PyTorch's own switch that aligns allocations of 2 MB
  and more to 2 MB and asks for transparent huge pages (``madvise``);
* ``glibc-32mb``: ``GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=...``
  (32 MB is glibc's largest accepted mmap threshold: blocks below it stay on the heap);
* ``keep-freed``: ``featmatch.keep_freed_memory()`` called first (glibc ``mallopt``: no mmap
  for large blocks, no heap trimming, so freed blocks of any size are reused; what the
  ``featmatch`` command does by default);
* ``jemalloc`` / ``tcmalloc``: ``LD_PRELOAD`` of the Debian/Ubuntu packages ``libjemalloc2``
  / ``libgoogle-perftools4`` (skipped when not installed; ``--jemalloc`` / ``--tcmalloc`` give
  other paths); jemalloc with ``MALLOC_CONF`` set to keep freed memory (``JEMALLOC_CONF``,
  as Intel's PyTorch CPU guides do: with its defaults it gives pages back and faults more);
* ``a+b``: two combined, e.g. ``thp+tcmalloc``.

Each (model, variant) runs in its own process: one warm-up pair, then ``--repeat`` timed pairs;
the rounds are interleaved (every round runs every variant once, in a rotated order) so machine
load hits the variants alike. Reported per model and variant: median seconds per pair over the
rounds, the speed ratio against ``glibc`` (> 1 = faster), minor page faults per pair and the
process's peak RSS. Outputs are the same under every variant (the allocator does not change
arithmetic); the script checks the match counts agree.

    python benchmarks/bench_allocator.py --images ../shared/data/photos --threads 2 --rounds 5
    python benchmarks/bench_allocator.py --images ../shared/data/photos --models lift,xfeat --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_MODELS = "xfeat,xfeat+lighterglue,aliked.n16,aliked.n16+lightglue,loftr.tiny,lift,drcnet.xfeat"
LIBDIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib")
ALLOCATOR_ENV = ("LD_PRELOAD", "GLIBC_TUNABLES", "THP_MEM_ALLOC_ENABLE", "MALLOC_CONF", "BENCH_KEEP_FREED_MEMORY")


def _find(name: str) -> str | None:
    for d in LIBDIRS:
        p = Path(d) / name
        if p.exists():
            return str(p)
    return None


JEMALLOC_CONF = "oversize_threshold:1,background_thread:true,metadata_thp:auto,dirty_decay_ms:-1,muzzy_decay_ms:-1"


def variants(args) -> dict[str, dict[str, str]]:
    """Environment additions per variant (only those this machine can run); ``a+b`` combines
    two (e.g. ``thp+tcmalloc``)."""
    known = {"glibc": {}, "thp": {"THP_MEM_ALLOC_ENABLE": "1"},
             "glibc-32mb": {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=33554432:"
                                              "glibc.malloc.trim_threshold=4294967296"},
             "keep-freed": {"BENCH_KEEP_FREED_MEMORY": "1"}}
    je = args.jemalloc or _find("libjemalloc.so.2")
    tc = args.tcmalloc or _find("libtcmalloc.so.4") or _find("libtcmalloc_minimal.so.4")
    if je:  # never give memory back (the setting Intel's PyTorch CPU guides use)
        known["jemalloc"] = {"LD_PRELOAD": je, "MALLOC_CONF": JEMALLOC_CONF}
    if tc:
        known["tcmalloc"] = {"LD_PRELOAD": tc}
    wanted = [v for v in args.variants.split(",") if v] if args.variants else list(known)
    out = {}
    for v in wanted:
        parts = v.split("+")
        missing = [x for x in parts if x not in known]
        if missing:
            raise SystemExit(f"variant {v}: not available here: {', '.join(missing)} (have: {', '.join(known)})")
        out[v] = {k: val for x in parts for k, val in known[x].items()}
    return out


def child(args) -> None:
    """One (model, variant) measurement; prints one JSON line."""
    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from _common import load_images

    import featmatch

    if os.environ.get("BENCH_KEEP_FREED_MEMORY") == "1" and not featmatch.keep_freed_memory():
        raise SystemExit("keep_freed_memory() is not available here (needs Linux with glibc)")
    torch.set_num_threads(args.threads)
    imgs = load_images(Path(args.images), 2 * args.pairs)
    pairs = [(imgs[2 * i], imgs[2 * i + 1]) for i in range(args.pairs)]
    model = featmatch.load(args.model)
    with torch.inference_mode():
        model.match(*pairs[0])  # warm-up (weights, oneDNN kernels, first allocations)
        times, counts = [], []
        flt0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for r in range(args.repeat):
            a, b = pairs[r % len(pairs)]
            t = time.perf_counter()
            m = model.match(a, b)
            times.append(time.perf_counter() - t)
            counts.append(len(m.points0))
        flt = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - flt0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KB -> MB on Linux
    print(json.dumps({"s": statistics.median(times), "faults": flt / args.repeat, "rss_mb": peak, "matches": counts}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", required=True, help="folder of photos (the first 2 x --pairs, resized to 640x480)")
    p.add_argument("--models", default=DEFAULT_MODELS)
    p.add_argument("--variants", default=None, help="comma list of glibc,thp,glibc-32mb,keep-freed,jemalloc,tcmalloc or a+b "
                                                    "combinations (default: all, where available)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeat", type=int, default=4, help="timed pairs per process")
    p.add_argument("--pairs", type=int, default=2, help="distinct image pairs, cycled")
    p.add_argument("--jemalloc", default=None, help="path of libjemalloc.so (default: the system's)")
    p.add_argument("--tcmalloc", default=None, help="path of libtcmalloc.so (default: the system's)")
    p.add_argument("--json", default=None, help="also write the raw results here")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)

    vs = variants(args)
    models = [m for m in args.models.split(",") if m]
    base_env = {k: v for k, v in os.environ.items() if k not in ALLOCATOR_ENV}
    base_env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    print(f"load average before: {os.getloadavg()[0]:.1f}; {args.threads} thread(s), 640x480, "
          f"{args.rounds} rounds x {args.repeat} pairs; variants: {', '.join(vs)}", flush=True)
    res: dict = {m: {v: [] for v in vs} for m in models}
    for r in range(args.rounds):
        for m in models:
            order = list(vs)
            order = order[r % len(order):] + order[:r % len(order)]
            for v in order:
                cmd = [sys.executable, __file__, "--child", "--model", m, "--images", args.images,
                       "--threads", str(args.threads), "--repeat", str(args.repeat), "--pairs", str(args.pairs)]
                out = subprocess.run(cmd, capture_output=True, text=True, env={**base_env, **vs[v]})
                if out.returncode != 0:
                    raise SystemExit(f"{m} under {v} failed: {out.stderr.strip().splitlines()[-1:]}")
                res[m][v].append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"round {r + 1}/{args.rounds} done (load {os.getloadavg()[0]:.1f})", flush=True)

    print("\n| model | variant | s / pair (median) | speed vs glibc | page faults / pair | peak RSS MB |")
    print("|---|---|---:|---:|---:|---:|")
    for m in models:
        base = statistics.median(x["s"] for x in res[m]["glibc"]) if "glibc" in res[m] else None
        counts = {v: res[m][v][0]["matches"] for v in vs}
        for v in vs:
            s = statistics.median(x["s"] for x in res[m][v])
            ratio = f"{base / s:.2f}x" if base else ""
            faults = statistics.median(x["faults"] for x in res[m][v])
            rss = max(x["rss_mb"] for x in res[m][v])
            print(f"| {m} | {v} | {s:.3f} | {ratio} | {faults:,.0f} | {rss:,.0f} |")
        if len({tuple(c) for c in counts.values()}) > 1:
            print(f"(note: {m}: match counts differ between variants: {counts})")
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
