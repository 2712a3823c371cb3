"""Synthetic-pair throughput of a photo folder: pairs per second through a DataLoader by
worker count (decoding, warping and augmentation all happen in ``__getitem__``), to compare
with a training step's time (benchmarks/train_step.py).

    python benchmarks/data_throughput.py --images PHOTOS --workers 0,1,2 --pairs 200

Each worker count reads its own range of sample indices (no photo-cache reuse between
counts); the first batch (worker start-up) is timed apart.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", required=True)
    ap.add_argument("--size", default="320x256")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--pairs", type=int, default=200, help="pairs timed per worker count")
    ap.add_argument("--workers", default="0,1,2")
    ap.add_argument("--rotation", type=float, default=180.0)
    ap.add_argument("--jpeg", type=float, default=0.3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    import cv2

    cv2.setNumThreads(1)
    from featmatch.data import SyntheticConfig, SyntheticPairs, list_images, worker_init

    w, h = (int(v) for v in args.size.split("x"))
    files = list_images(args.images)
    ds = SyntheticPairs(files, SyntheticConfig(size=(w, h), seed=0, max_rotation_deg=args.rotation,
                                               jpeg_prob=args.jpeg))
    rows = []
    start = 0
    for nw in (int(v) for v in args.workers.split(",")):
        n = args.pairs + args.batch_size
        dl = torch.utils.data.DataLoader(ds, batch_size=args.batch_size, sampler=range(start, start + n),
                                         num_workers=nw, worker_init_fn=worker_init if nw else None)
        start += n
        t0 = time.perf_counter()
        it = iter(dl)
        next(it)
        t1, c1 = time.perf_counter(), time.process_time()
        count = sum(b["image0"].shape[0] for b in it)
        t2, c2 = time.perf_counter(), time.process_time()
        # CPU time of this process: the whole pipeline with 0 workers, only collation with workers
        rows.append({"workers": nw, "pairs_per_s": count / (t2 - t1), "ms_per_pair": 1000 * (t2 - t1) / count,
                     "main_cpu_ms_per_pair": 1000 * (c2 - c1) / count, "first_batch_s": t1 - t0})
    load = os.getloadavg()
    print(f"{len(files)} photos, {w}x{h}, batch {args.batch_size}, rotation {args.rotation}, jpeg {args.jpeg}; "
          f"load average {load[0]:.1f} {load[1]:.1f}")
    print("| workers | pairs/s | ms/pair | main-process CPU ms/pair | first batch s |")
    print("|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['workers']} | {r['pairs_per_s']:.1f} | {r['ms_per_pair']:.1f} | {r['main_cpu_ms_per_pair']:.1f} "
              f"| {r['first_batch_s']:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "load": load, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
