"""DRC-Net memory, speed and compute per stage (random weights, CPU).

Usage (the table of docs/drcnet.md):

    python benchmarks/bench_drcnet.py --sizes 640x480,1024x768 --threads 2
    python benchmarks/bench_drcnet.py --sizes 640x480 --reference /tmp/DualRC-Net   # + the authors' code

For every size, a fresh process builds ``--model`` (default ``drcnet.resnet101``, the paper
model; random weights) and matches one pair of random smooth images of that size with
``model.match`` (``resize=None``: the given size); it reports the seconds for the pair and
the peak resident memory (``ru_maxrss``) of the process, and its resident memory after
building the model (so the pair's own extra is visible). Each process is separate, so peaks
do not mix. With ``--reference`` the authors' ``ImMatchNet`` + ``ImgMatcher`` (patched for
torch 2 as in ``scripts/make_drcnet_fixture.py``; float32, CPU) is measured the same way and
the ratio reference / featmatch is printed (same machine, runs interleaved per size).

Compute cost per stage (``--flops``, default on): multiply-adds x 2 counted by
``torch.utils.flop_counter`` on the meta device (backbone, FPN laterals, the fine 3x3 conv,
4D correlation + NC) and analytically for the fine matching (two directions x queries x
fine cells of the other image x channels x 2), per pair at each size.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def _images(h: int, w: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(2, 3, h // 16 + 2, w // 16 + 2, generator=g)
    up = torch.nn.functional.interpolate(base, size=(h, w), mode="bicubic", align_corners=False)
    up = up + 0.1 * torch.randn(2, 3, h, w, generator=g)
    return up[:1].clamp(0, 1), torch.roll(up[:1], (8, 12), (2, 3)).clamp(0, 1)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def child_featmatch(model_name: str, h: int, w: int, threads: int) -> dict:
    import featmatch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = featmatch.load(model_name, pretrained=False, resize=None, max_pixels=h * w)
    rss_model = _rss_mb()
    x0, x1 = _images(h, w)
    t = time.perf_counter()
    m = model.match(x0, x1)
    dt = time.perf_counter() - t
    return {"seconds": dt, "matches": len(m), "rss_model_mb": rss_model,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def child_reference(root: str, h: int, w: int, threads: int) -> dict:
    import tempfile

    sys.path.insert(0, str(HERE.parent / "scripts"))
    import make_drcnet_fixture as fx  # the torch-2 patches and the CPU shims

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as td:
        model_v2, tools = fx._import_reference(Path(root), Path(td))
        net = model_v2.ImMatchNet(use_cuda=False, feature_extraction_cnn="resnet101fpn_3_1024_4",
                                  ncons_kernel_sizes=[3, 3], ncons_channels=[16, 1], checkpoint=None)
        net.eval()
        matcher = object.__new__(tools.ImgMatcher)
        matcher.model, matcher.im_fe_ratio, matcher.postprocess_device = net, 16, None
        matcher.feature_extractor = tools.ExtractFeatureMap(im_fe_ratio=16, device=None)
        rss_model = _rss_mb()
        x0, x1 = _images(h, w)
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        t = time.perf_counter()
        with torch.no_grad():
            matches, _, _ = matcher({"source_image": (x0 - mean) / std, "target_image": (x1 - mean) / std},
                                    num_pts=2000, iter_step=1000, central_align=True)
        dt = time.perf_counter() - t
    return {"seconds": dt, "matches": int(matches.shape[0]), "rss_model_mb": rss_model,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def flops_per_stage(model_name: str, h: int, w: int) -> dict:
    """GFLOP (2 x multiply-adds) per stage for one pair of h x w images."""
    from torch.utils.flop_counter import FlopCounterMode

    import featmatch
    from featmatch.models.drcnet.ncons import correlation_4d, mutual_matching

    with torch.device("meta"):
        model = featmatch.load(model_name, pretrained=False)
        fe = model.FeatureExtraction
        x = torch.rand(2, 3, h, w)
        fc = FlopCounterMode(display=False)
        with fc, torch.no_grad():
            fine, coarse = fe(x)
        counts = fc.get_flop_counts()
        total = lambda name: sum(counts.get(name, {}).values())  # noqa: E731
        fpn_fine = "FeatureExtraction.last_layer_block" if hasattr(fe, "last_layer_block") else "FeatureExtraction.fine_layer_block"
        fine_conv = total(fpn_fine)
        coarse_conv = total("FeatureExtraction.coarse_layer_block")
        laterals = sum(total(f"FeatureExtraction.inner_block_list.{i}") for i in range(len(fe.inner_block_list)))
        backbone = fc.get_total_flops() - fine_conv - coarse_conv - laterals
        fc2 = FlopCounterMode(display=False)
        c = coarse[:1]
        with fc2, torch.no_grad():
            corr = correlation_4d(c, c)
            model.NeighConsensus(mutual_matching(corr))
        nc = fc2.get_total_flops()
    hc, wc = h // 16, w // 16
    queries = 16 * int(hc * wc * model.config.query_fraction)
    d = fine.shape[1]
    fine_match = 2 * queries * (16 * hc * wc) * d * 2
    parts = {"backbone": backbone, "fpn_laterals": laterals, "fine_3x3_conv": fine_conv,
             "coarse_3x3_conv": coarse_conv, "corr4d_nc": nc, "fine_matching": fine_match}
    tot = sum(parts.values())
    return {k: {"gflop": v / 1e9, "share": v / tot} for k, v in parts.items()} | {"total_gflop": tot / 1e9}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="640x480,1024x768", help="comma-separated WxH")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default="drcnet.resnet101")
    ap.add_argument("--reference", default=None, help="checkout of ActiveVisionLab/DualRC-Net (optional)")
    ap.add_argument("--no-flops", action="store_true")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes.split(",")]
    if args.child:  # worker process: one measurement, JSON on the last line
        kind, w, h = args.child.split(":")
        res = child_featmatch(args.model, int(h), int(w), args.threads) if kind == "featmatch" else \
            child_reference(args.reference, int(h), int(w), args.threads)
        print(json.dumps(res))
        return
    print(f"model {args.model}, random weights, {args.threads} threads, torch {torch.__version__}")
    for w, h in sizes:
        kinds = ["featmatch"] + (["reference"] if args.reference else [])
        res = {}
        for kind in kinds:
            cmd = [sys.executable, __file__, "--child", f"{kind}:{w}:{h}", "--threads", str(args.threads),
                   "--model", args.model] + (["--reference", args.reference] if args.reference else [])
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                print(f"{w}x{h} {kind}: failed: {out.stderr.strip().splitlines()[-1:]}")
                continue
            res[kind] = json.loads(out.stdout.strip().splitlines()[-1])
            r = res[kind]
            print(f"{w}x{h} {kind:9s}: {r['seconds']:.1f} s/pair, peak RSS {r['peak_rss_mb'] / 1024:.2f} GB "
                  f"(model built: {r['rss_model_mb'] / 1024:.2f} GB), {r['matches']} matches", flush=True)
        if len(res) == 2:
            print(f"{w}x{h} ratio reference/featmatch: time {res['reference']['seconds'] / res['featmatch']['seconds']:.2f}, "
                  f"peak RSS {res['reference']['peak_rss_mb'] / res['featmatch']['peak_rss_mb']:.2f}")
        if not args.no_flops:
            f = flops_per_stage(args.model, h, w)
            print(f"{w}x{h} GFLOP per pair: total {f.pop('total_gflop'):.0f}; " +
                  ", ".join(f"{k} {v['gflop']:.0f} ({100 * v['share']:.0f}%)" for k, v in f.items()), flush=True)


if __name__ == "__main__":
    main()
