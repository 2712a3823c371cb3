"""LoFTR speed and memory: featmatch vs kornia with the same weights, in one process.

Usage (640x480 on CPU with 2 threads, the table of docs/loftr.md):

    pip install "kornia>=0.9"
    python benchmarks/bench_loftr.py --images ../shared/data/photos --threads 2 --repeat 5

What it does:

1. Builds ``kornia.feature.LoFTR(pretrained=None)`` (the paper-size outdoor preset) with fixed
   random weights (``torch.manual_seed(--seed)``, plus random BatchNorm statistics so folding
   them is exercised), saves them as an official-style Lightning checkpoint
   (``{"state_dict": {"matcher." + name: tensor}}``) in a temporary folder and loads that
   file with ``featmatch.load("loftr.outdoor", weights=...)`` (the path a real checkpoint
   takes, strict loading).
2. Reads two photos of ``--images`` (``--pair``, default the first two files in name order)
   as grey (OpenCV), resized to ``--size`` with INTER_AREA: the same ``(1, 1, H, W)``
   tensors for both.
3. Checks the outputs before timing: the same matches (image-0 points equal), image-1
   points within 1e-3 px, confidences within 1e-4. Random weights give few confident
   matches, so both run with the same lowered threshold (``--threshold``, default 0: every
   mutual nearest neighbour off the border is compared). A failure stops the script with exit
   code 1. Random weights also give few coarse matches, so the fine stage is timed on its
   own as well, on ``--fine-matches`` random coarse pairs and the same input features
   (kornia's; refined offsets checked within 1e-3 px): with real weights a 640x480 pair has
   hundreds to thousands of matches.
4. Times both interleaved: each repeat runs every implementation once, in a rotating order,
   so they see the same machine load; one warm-up round first. Reported: median seconds per
   pair, interquartile range, and the ratio kornia / featmatch (> 1: featmatch faster), plus
   featmatch's ``loftr.tiny`` (random weights, no kornia counterpart) for reference.
5. Peak memory (``--memory``, on by default): each implementation runs in its own
   subprocess; after imports, model build and image loading the peak resident set size
   (``ru_maxrss``) is the baseline; after one warm-up and one timed pair the growth of the
   peak over that baseline is the memory the matching needs (MB).

The 1-minute load average is printed before and after; on a busy machine (load above the
core count minus the threads used) the script warns that timings are inflated (OpenMP
threads waiting for a core); the ratios of interleaved runs stay comparable.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import torch

TOL_PX, TOL_CONF = 1e-3, 1e-4

from _common import memory_runs


# ----------------------------------------------------------------------------- setup
def kornia_random(seed: int):
    """kornia's LoFTR (outdoor sizes) with fixed random weights and BatchNorm statistics."""
    import kornia.feature as KF

    torch.manual_seed(seed)
    ref = KF.LoFTR(pretrained=None).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, t in ref.state_dict().items():
            if name.endswith("running_mean"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
    return ref


def save_official_ckpt(state: dict, path: Path) -> None:
    torch.save({"epoch": 0, "global_step": 0, "state_dict": {"matcher." + k: v for k, v in state.items()}}, path)


def load_kornia(ckpt: Path, threshold: float):
    import kornia.feature as KF

    ref = KF.LoFTR(pretrained=None)
    ref.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"])
    ref.coarse_matching.thr = threshold
    return ref.eval()


def load_featmatch(name: str, ckpt: Path | None, threshold: float, seed: int):
    import featmatch

    if ckpt is None:
        torch.manual_seed(seed)
        return featmatch.load(name, pretrained=False, threshold=threshold)
    return featmatch.load(name, weights=ckpt, threshold=threshold)


def read_pair(folder: Path, pair: tuple[int, int], size_wh: tuple[int, int]) -> tuple[list[Path], list[torch.Tensor]]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if len(files) <= max(pair):
        raise SystemExit(f"{folder}: need at least {max(pair) + 1} images, found {len(files)}")
    out = []
    for k in pair:
        img = cv2.imread(str(files[k]), cv2.IMREAD_GRAYSCALE)
        img = cv2.resize(img, size_wh, interpolation=cv2.INTER_AREA)
        out.append(torch.from_numpy(img).float()[None, None] / 255.0)
    return [files[k] for k in pair], out


def build(args, ckpt: Path) -> dict:
    """name -> function() matching the pair (inputs bound), for the timed implementations."""
    _, (x0, x1) = read_pair(args.images, args.pair, args.size)
    fns = {}
    if "kornia" in args.only:
        ref = load_kornia(ckpt, args.threshold)
        fns["kornia"] = lambda: ref({"image0": x0, "image1": x1})
    if "featmatch" in args.only:
        fm = load_featmatch("loftr.outdoor", ckpt, args.threshold, args.seed)
        fns["featmatch"] = lambda: fm.match(x0, x1)
    if "tiny" in args.only:
        tiny = load_featmatch("loftr.tiny", None, args.threshold, args.seed)
        fns["tiny"] = lambda: tiny.match(x0, x1)
    return fns


# ----------------------------------------------------------------------------- checks
def check_pair(ref, fm, x0, x1) -> tuple[bool, str]:
    with torch.inference_mode():
        r = ref({"image0": x0, "image1": x1})
        m = fm.match(x0, x1)
    n = len(r["keypoints0"])
    if len(m) != n:
        return False, f"{len(m)} featmatch vs {n} kornia matches"
    if n == 0:
        return False, "no matches: lower --threshold"
    d0 = float((m.points0 - r["keypoints0"]).abs().max())
    d1 = float((m.points1 - r["keypoints1"]).abs().max())
    dc = float((m.scores - r["confidence"]).abs().max())
    ok = d0 == 0.0 and d1 <= TOL_PX and dc <= TOL_CONF
    return ok, (f"{n} matches, points0 max diff {d0:.1e} px, points1 {d1:.1e} px (tol {TOL_PX:g}), "
                f"confidence {dc:.1e} (tol {TOL_CONF:g})")


def fine_stage_fns(ref, fm, x0, x1, n_matches: int, seed: int):
    """The fine stage alone (windows, fine transformer, expectation) on the same random
    coarse matches and the same inputs: kornia's fine maps and coarse transformer tokens
    (given to featmatch in the channels-last layout its CPU backbone produces), so only
    the fine stage's own computations differ."""
    x = torch.cat([x0, x1])
    with torch.inference_mode():  # kornia's forward() steps up to the coarse transformer
        feats = ref.extract_features(x)
        kc, kf = feats["coarse"], feats["fine"]
        tok = kc.permute(0, 2, 3, 1).reshape(2, -1, kc.shape[1]).contiguous()
        t0, t1 = ref.loftr_coarse(tok[:1], tok[1:])
        f0, f1 = kf[:1], kf[1:]
        f0_cl, f1_cl = (f.contiguous(memory_format=torch.channels_last) for f in (f0, f1))
    h, w = kc.shape[-2:]
    g = torch.Generator().manual_seed(seed)
    n_matches = min(n_matches, h * w)
    i = torch.randperm(h * w, generator=g)[:n_matches]
    j = torch.randperm(h * w, generator=g)[:n_matches]
    b = torch.zeros(n_matches, dtype=torch.long)

    def run_kornia():
        data = {"b_ids": b, "i_ids": i, "j_ids": j, "stride_c": 8, "stride_f": 2, "mconf": torch.ones(n_matches),
                "mkpts0_c": torch.stack([i % w, i // w], 1).float() * 8,
                "mkpts1_c": torch.stack([j % w, j // w], 1).float() * 8}
        w0, w1 = ref.fine_preprocess(f0, f1, t0, t1, data)
        w0, w1 = ref.loftr_fine(w0, w1)
        ref.fine_matching(w0, w1, data)
        return data["expec_f"][:, :2]

    def run_featmatch():
        return fm.refine(f0_cl, f1_cl, t0, t1, b, i, j, w, w)[0]

    return {"kornia": run_kornia, "featmatch": run_featmatch}


# ----------------------------------------------------------------------------- timing
def time_interleaved(fns: dict, repeat: int, warmup: int = 1) -> dict:
    names = list(fns)
    times = {n: [] for n in names}
    with torch.inference_mode():
        for r in range(warmup + repeat):
            order = names[r % len(names):] + names[:r % len(names)]  # rotate who goes first
            for n in order:
                t0 = time.perf_counter()
                fns[n]()
                if r >= warmup:
                    times[n].append(time.perf_counter() - t0)
    return times


def table(times: dict, label: str) -> list[str]:
    med = {n: statistics.median(t) for n, t in times.items()}
    rows = []
    for n, t in times.items():
        q = statistics.quantiles(t, n=4) if len(t) > 1 else [med[n]] * 3
        ratio = f"{med['kornia'] / med[n]:.2f}x" if "kornia" in med and n != "tiny" else "-"
        rows.append(f"| {label} | {NAMES[n]} | {med[n]:.2f} | {q[0]:.2f}-{q[2]:.2f} | {ratio} |")
    return rows


NAMES = {"kornia": "kornia 0.9 LoFTR", "featmatch": "featmatch loftr.outdoor", "tiny": "featmatch loftr.tiny"}


# ----------------------------------------------------------------------------- memory
def _status_kb(field: str) -> int | None:
    """``VmRSS`` / ``VmHWM`` of this process in kB (Linux), else None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset the peak RSS (VmHWM) to the current RSS (Linux >= 4.0: ``clear_refs`` 5)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def memory_worker(args) -> None:
    """Subprocess: peak RSS growth of matching the pair (warm-up + timed run) with one
    implementation, over the baseline after imports, model build and image loading.

    The peak is the process's own high-water mark (``VmHWM`` on Linux, reset to the current
    RSS once the model is built, so a transient peak while loading weights does not hide the
    matching's); ``ru_maxrss`` is the fallback elsewhere. (On Linux ``ru_maxrss`` of a child
    started from a big parent holds the parent's RSS at spawn time, so it is not used.)
    """
    torch.set_num_threads(args.threads)
    fn = build(args, args.ckpt)[args.only[0]]
    linux = _status_kb("VmHWM") is not None and _reset_peak()
    base = _status_kb("VmRSS") if linux else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with torch.inference_mode():
        fn()  # warm-up
        fn()  # timed run
    peak = _status_kb("VmHWM") if linux else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"delta_mb": (peak - base) / 1024.0, "peak_mb": peak / 1024.0, "base_mb": base / 1024.0,
                      "source": "VmHWM" if linux else "ru_maxrss"}))


def memory_table(args, ckpt: Path, names) -> dict:
    return memory_runs({name: [sys.executable, str(Path(__file__).resolve()), "--images", str(args.images),
                               "--pair", *map(str, args.pair), "--size", f"{args.size[0]}x{args.size[1]}",
                               "--threads", str(args.threads), "--threshold", str(args.threshold), "--seed",
                               str(args.seed), "--only", name, "--ckpt", str(ckpt), "--_memory-worker"]
                        for name in names})


# ----------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", required=True, type=Path, help="folder of photos")
    ap.add_argument("--pair", type=int, nargs=2, default=(0, 1), help="indices of the two photos (name order)")
    ap.add_argument("--size", default="640x480", help="WxH the photos are resized to")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5, help="timed rounds (each runs every implementation once)")
    ap.add_argument("--threshold", type=float, default=0.0, help="coarse threshold for both (random weights)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fine-matches", type=int, default=2000, help="coarse matches for the fine-stage row (0: skip)")
    ap.add_argument("--only", nargs="+", default=["kornia", "featmatch", "tiny"],
                    choices=["kornia", "featmatch", "tiny"])
    ap.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-memory subprocesses")
    ap.add_argument("--ckpt", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--_memory-worker", dest="memory_worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.size = tuple(int(v) for v in args.size.lower().split("x"))
    if args.memory_worker:
        memory_worker(args)
        return

    import kornia

    import featmatch

    start = time.perf_counter()
    ncpu = os.cpu_count() or 1
    load0 = os.getloadavg()
    torch.set_num_threads(args.threads)
    files, (x0, x1) = read_pair(args.images, args.pair, args.size)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "loftr_random_outdoor.ckpt"
        save_official_ckpt(kornia_random(args.seed).state_dict(), ckpt)
        ref = load_kornia(ckpt, args.threshold)
        fm = load_featmatch("loftr.outdoor", ckpt, args.threshold, args.seed)
        tiny = load_featmatch("loftr.tiny", None, args.threshold, args.seed)
        w, h = args.size
        print(f"LoFTR {w}x{h}, {files[0].name} / {files[1].name} (grey), random weights (seed {args.seed}), "
              f"threshold {args.threshold:g}, torch {torch.__version__}, kornia {kornia.__version__}, "
              f"featmatch {featmatch.__version__}, {args.threads} threads, {ncpu} cores, "
              f"load average {load0[0]:.2f} (1 min) before")

        print("output check:")
        ok, msg = check_pair(ref, fm, x0, x1)
        print(f"  pair: featmatch vs kornia: {'OK  ' if ok else 'FAIL'} {msg}")
        fine = fine_stage_fns(ref, fm, x0, x1, args.fine_matches, args.seed) if args.fine_matches else None
        if fine is not None:
            with torch.inference_mode():
                ek, ef = fine["kornia"](), fine["featmatch"]()
            dpx = float((ek - ef).abs().max()) * 4.0  # window units -> pixels (+-2 fine cells of 2 px)
            fine_ok = dpx <= TOL_PX
            print(f"  fine stage, {len(ef)} coarse matches: {'OK  ' if fine_ok else 'FAIL'} "
                  f"refined offsets max diff {dpx:.1e} px (tol {TOL_PX:g})")
            ok &= fine_ok
        if not ok:
            print("featmatch outputs differ from kornia's: not timing")
            sys.exit(1)

        fns = {"kornia": lambda: ref({"image0": x0, "image1": x1}), "featmatch": lambda: fm.match(x0, x1),
               "tiny": lambda: tiny.match(x0, x1)}
        fns = {k: v for k, v in fns.items() if k in args.only}
        # the output checks above ran every implementation once: they are the warm-up of the pair
        # (tiny gets one warm-up round here)
        if "tiny" in fns:
            with torch.inference_mode():
                fns["tiny"]()
        times = time_interleaved(fns, args.repeat, warmup=0)
        fine_times = time_interleaved(fine, args.repeat, warmup=0) if fine is not None else None
        load1 = os.getloadavg()[0]

        print(f"\n{args.threads} thread(s), median of {args.repeat} interleaved rounds (after a warm-up), "
              f"load average {load1:.2f} (1 min) after")
        if max(load0[0], load1) > max(ncpu - args.threads, 0) + 0.5:
            print(f"WARNING: the machine is busy (load {max(load0[0], load1):.2f} on {ncpu} cores): timings are "
                  "inflated; compare the ratios, re-run on an idle machine for absolute numbers")
        print("| step | implementation | s (median) | IQR (s) | kornia / this |")
        print("|---|---|---:|---:|---:|")
        for row in table(times, f"pair {w}x{h}, end to end"):
            print(row)
        if fine_times is not None:
            for row in table(fine_times, f"fine stage, {args.fine_matches} matches"):
                print(row)
        if "kornia" in times and "featmatch" in times:
            speed = statistics.median(times["kornia"]) / statistics.median(times["featmatch"])
            print(f"featmatch vs kornia, end to end: {speed:.2f}x ({'meets' if speed >= 1.2 else 'misses'} "
                  f"the 1.2x target)")

        if args.memory:
            mem = memory_table(args, ckpt, list(fns))
            src = next(iter(mem.values()))["source"] if mem else "-"
            print(f"\npeak RSS growth over the loaded model for one pair ({args.threads} threads, one subprocess "
                  f"per implementation, warm-up + timed run, {src})")
            print("| implementation | baseline RSS (MB) | peak RSS (MB) | peak growth (MB) |")
            print("|---|---:|---:|---:|")
            for n, m in mem.items():
                print(f"| {NAMES[n]} | {m['base_mb']:.0f} | {m['peak_mb']:.0f} | {m['delta_mb']:.0f} |")
    print(f"\n(total {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
