"""DRC-Net's neighbourhood consensus and match extraction: the shape-adaptive Conv4d and the
reused fine-score buffer against the earlier code paths, in one process.

Usage (the table of docs/drcnet.md, "Speed of the 4D NC and the fine matching"):

    python benchmarks/bench_drcnet_matching.py --threads 1 --repeat 3
    python benchmarks/bench_drcnet_matching.py --images A.png B.png --model drcnet.xfeat

Two measurements, each variant run interleaved ``--repeat`` times (median wall seconds):

* ``nc``: the symmetric NC (Conv4d 1->16, 16->1, both orders) on a random coarse 4D
  correlation of ``--coarse HAxWAxHBxWB`` (default 48x64x48x64: a 1024x768 pair at 1/16),
  with ``conv4d``'s arrangement picked by shape (default) and forced to the earlier
  ``k1`` batched 3D convolutions; max abs difference of the outputs.
* ``match``: ``model.match`` of one pair (``--images``, default two random smooth
  1024x768 images) with both changes on (default), and with the earlier paths (``conv4d``
  forced to slices, ``fine_scores`` allocating its score maps per chunk); whether the
  match sets are equal and the largest score difference.

No reference implementation is involved: the earlier paths are featmatch's own previous
code, still in the module (``_conv4d_slices``; ``fine_scores`` without ``out``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import contextmanager

import torch


@contextmanager
def earlier_paths(nc: bool = True, fine: bool = True):
    """Force the code paths before session 10 (``conv4d`` by slices; fresh score maps)."""
    from featmatch.models.drcnet import model as drc
    from featmatch.ops import conv4d as c4

    saved = (c4._conv4d_stacked_input, c4._conv4d_stacked_output, drc.fine_scores)
    try:
        if nc:
            c4._conv4d_stacked_input = lambda x, w, b: c4._conv4d_slices(x, w, b)
            c4._conv4d_stacked_output = lambda x, w, b, **kw: c4._conv4d_slices(x, w, b)
        if fine:
            orig = saved[2]
            drc.fine_scores = lambda prior, fq, ft, pts, out=None: orig(prior, fq, ft, pts)
        yield
    finally:
        c4._conv4d_stacked_input, c4._conv4d_stacked_output, drc.fine_scores = saved


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def bench_nc(shape: tuple, repeat: int) -> dict:
    from featmatch.models.drcnet.ncons import NeighConsensus

    torch.manual_seed(0)
    nc = NeighConsensus((3, 3), (16, 1)).eval()
    x = torch.rand(1, 1, *shape)
    times: dict = {"new": [], "earlier": []}
    outs = {}
    with torch.inference_mode():
        for _ in range(repeat):
            t, outs["new"] = timed(lambda: nc(x))
            times["new"].append(t)
            with earlier_paths(fine=False):
                t, outs["earlier"] = timed(lambda: nc(x))
            times["earlier"].append(t)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"new_s": med["new"], "earlier_s": med["earlier"], "ratio": med["earlier"] / med["new"],
            "max_abs_diff": float((outs["new"] - outs["earlier"]).abs().max())}


def bench_match(model_name: str, images, repeat: int) -> dict:
    import featmatch

    m = featmatch.load(model_name, **({} if model_name == "drcnet.xfeat" else {"pretrained": False}))
    if images is None:
        g = torch.Generator().manual_seed(0)
        base = torch.rand(2, 3, 50, 66, generator=g)
        imgs = torch.nn.functional.interpolate(base, size=(768, 1024), mode="bicubic", align_corners=False).clamp(0, 1)
        a, b = imgs[:1], imgs[1:]
    else:
        a, b = images
    times: dict = {"new": [], "earlier": []}
    res = {}
    with torch.inference_mode():
        for _ in range(repeat):
            t, res["new"] = timed(lambda: m.match(a, b))
            times["new"].append(t)
            with earlier_paths():
                t, res["earlier"] = timed(lambda: m.match(a, b))
            times["earlier"].append(t)
    med = {k: statistics.median(v) for k, v in times.items()}

    def pairs(r):
        return {tuple(v) for v in torch.cat([r.points0, r.points1], 1).round(decimals=3).tolist()}

    n, e = res["new"], res["earlier"]
    return {"new_s": med["new"], "earlier_s": med["earlier"], "ratio": med["earlier"] / med["new"],
            "matches": [len(n), len(e)], "same_match_set": pairs(n) == pairs(e),
            "max_score_diff": float((n.scores.sort().values - e.scores.sort().values).abs().max())
            if len(n) == len(e) else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--coarse", default="48x64x48x64", help="HAxWAxHBxWB of the coarse 4D correlation")
    ap.add_argument("--model", default="drcnet.xfeat")
    ap.add_argument("--images", nargs=2, default=None, help="a real pair (default: random smooth 1024x768 images)")
    ap.add_argument("--skip-match", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    shape = tuple(int(v) for v in args.coarse.split("x"))
    r = bench_nc(shape, args.repeat)
    print(f"NC {args.coarse}, {args.threads} thread(s): {r['new_s']:.2f} s vs earlier {r['earlier_s']:.2f} s "
          f"(x{r['ratio']:.2f}), max abs diff {r['max_abs_diff']:.1e}", flush=True)
    if not args.skip_match:
        r = bench_match(args.model, args.images, args.repeat)
        print(f"{args.model} match: {r['new_s']:.1f} s vs earlier {r['earlier_s']:.1f} s (x{r['ratio']:.2f}), "
              f"matches {r['matches']}, same match set: {r['same_match_set']}, "
              f"max score diff {r['max_score_diff']}")


if __name__ == "__main__":
    main()
