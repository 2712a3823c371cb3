"""LIFT speed per stage (featmatch), with OpenCV SIFT timed in the same loop for scale.

Usage (640x480, CPU; the table of docs/lift.md):

    python benchmarks/bench_lift.py --images ../shared/data/photos --threads 1 2 --repeat 5

There is no runnable reference: the authors' Theano / TensorFlow-1 code does not install
on current Python (their issue #2 reports ~2 minutes per 1920x1200 image on a Titan X,
compilation included). So the script times featmatch's stages and OpenCV SIFT (4096 points)
on the same images, interleaved (each repeat runs every variant once over all images, so
they see the same machine load):

* ``pyramid+DET``: resizing to the 21 (or 16) scales and the 25x25 detector convolution + GHH;
* ``NMS+refine``: NMS over position and scale, sub-pixel / sub-scale refinement, top-k;
* ``ORI``: 64x64 crops at the keypoints + the orientation network;
* ``DESC``: rotated crops + the descriptor network;
* ``total``: ``model.extract`` (includes grey conversion and the Features bookkeeping).

Variants: ``bf16=False`` (float32) and ``bf16=True`` (bfloat16 autocast for the three
networks; the default on CPUs with native bf16); with ``--plain-layout`` also both with
``channels_last=False`` (ORI / DESC weights in the contiguous layout instead of the default
channels-last). Reported per stage: median wall-clock ms
per image over the repeats and the process CPU ms (with one thread, the work done, little
affected by other processes; with two it also counts OpenMP spinning); the 1-minute load
average before and after (a busy machine inflates wall-clock times).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import load_images  # noqa: E402

import featmatch  # noqa: E402
from featmatch.models.lift import LIFTConfig, scale_space_nms  # noqa: E402,F401


def stages(model, x: torch.Tensor) -> dict:
    """Wall-clock and process CPU seconds of each stage for one image ``(1, 3, H, W)``."""
    import math

    t: dict = {}

    def timed(name, fn):
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        t[name] = time.perf_counter() - w
        t[name + "_cpu"] = time.process_time() - c
        return out

    g = x.mean(1, keepdim=True)
    gn = model.net.detector.normalize(g)
    timed("pyramid+DET", lambda: model.score_pyramid(gn))
    xy, sigma, _ = timed("detect", lambda: model.detect(gn))
    for k in ("", "_cpu"):
        t["NMS+refine" + k] = max(t["detect" + k] - t["pyramid+DET" + k], 0.0)
    octaves = int(math.floor(math.log2(max(float(sigma.max()) * 24 / 128, 1.0)))) + 1 if len(sigma) else 1
    pyr = model.image_pyramid(g, octaves)
    bs = model.config.batch_size  # patches per network call, as LIFT.describe runs them
    chunks = [slice(i, i + bs) for i in range(0, len(xy), bs)]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=model.use_bf16(x.device)):
        ang = timed("ORI", lambda: torch.cat([model.net.orientation(model.sample_patches(pyr, xy[c], sigma[c])).float()
                                              for c in chunks]) if len(xy) else None)
        timed("DESC", lambda: [model.net.descriptor(model.sample_patches(pyr, xy[c], sigma[c], ang[c]))
                               for c in chunks] if len(xy) else None)
    f = timed("total", lambda: model.extract(x))
    t["keypoints"] = len(f)
    return t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", required=True)
    ap.add_argument("--n-images", type=int, default=3)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--weights", default=None, help="a LIFT model.pt (default: the installed checkpoint, else random)")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[LIFTConfig().batch_size],
                    help="patches per ORI / DESC batch to compare (default: the config's)")
    ap.add_argument("--plain-layout", action="store_true",
                    help="also time float32 / bf16 with channels_last=False (the contiguous layout)")
    args = ap.parse_args()
    imgs = load_images(Path(args.images), args.n_images)
    try:
        base = featmatch.load("lift", weights=args.weights)
    except featmatch.errors.FeatmatchError:
        print("(no LIFT weights: random weights; the keypoint count, hence ORI/DESC time, may differ)")
        base = featmatch.load("lift", pretrained=False)
    variants = {}
    for bs in args.batch_sizes:
        tag = "" if len(args.batch_sizes) == 1 else f", batch {bs}"
        variants[f"float32{tag}"] = featmatch.load("lift", pretrained=False, bf16=False, batch_size=bs)
        variants[f"bf16{tag}"] = featmatch.load("lift", pretrained=False, bf16=True, batch_size=bs)
        if args.plain_layout:
            for dt in ("float32", "bf16"):
                variants[f"{dt}{tag}, contiguous"] = featmatch.load("lift", pretrained=False, bf16=dt == "bf16",
                                                                    batch_size=bs, channels_last=False)
    for v in variants.values():
        v.load_state_dict(base.state_dict())
    sift = featmatch.load("sift", pretrained=False)
    print(f"load average before: {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores)")
    for th in args.threads:
        torch.set_num_threads(th)
        rows = {k: [] for k in variants}
        cpu = {k: [] for k in variants}
        sift_t = []
        with torch.inference_mode():
            for name, m in variants.items():  # warm-up
                stages(m, imgs[0])
            for r in range(args.repeat):
                for name, m in variants.items():
                    for x in imgs:
                        c = time.process_time()
                        rows[name].append(stages(m, x))
                        cpu[name].append(time.process_time() - c)
                for x in imgs:
                    s = time.perf_counter()
                    sift.extract(x)
                    sift_t.append(time.perf_counter() - s)
        print(f"\n{th} thread(s), 640x480, {args.n_images} images x {args.repeat} repeats (median ms per image)")
        keys = ["pyramid+DET", "NMS+refine", "ORI", "DESC", "total"]
        print("| variant | " + " | ".join(f"{k} wall / CPU" for k in keys) + " | keypoints |")
        print("|---" * (len(keys) + 2) + "|")
        for name in variants:
            med = {k: statistics.median(t[k] for t in rows[name]) * 1000 for k in keys}
            mcpu = {k: statistics.median(t[k + "_cpu"] for t in rows[name]) * 1000 for k in keys}
            kp = statistics.median(t["keypoints"] for t in rows[name])
            print(f"| {name} | " + " | ".join(f"{med[k]:.0f} / {mcpu[k]:.0f}" for k in keys) + f" | {kp:.0f} |")
        print(f"| OpenCV SIFT (featmatch `sift`) | | | | | {statistics.median(sift_t) * 1000:.0f} | |")
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
