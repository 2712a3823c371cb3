"""Homography-benchmark numbers of one model under several option sets.

    python benchmarks/homography_options.py loftr.tiny --data ../shared/data/homography \
        --variants '{"default": {}, "original size": {"resize": null}, "no LK": {"subpixel": "none"}}'

Same pairs and scoring as ``featmatch eval homography`` (its ``score_pair`` / ``summarize``:
OpenCV USAC_MAGSAC 3 px, seed 0), without its cache, for options the CLI does not expose.
Prints MHA@1/3/5 and MMA@1/3 (%) per option set.
"""

from __future__ import annotations

import argparse
import json

import torch

import featmatch
from featmatch.eval.data import homography_pairs
from featmatch.eval.homography import score_pair, summarize
from featmatch.eval.predict import _FeatureMemo, _predict_one


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="registered model name, e.g. loftr.tiny")
    ap.add_argument("--data", required=True, help="homography data root (featmatch eval homography layout)")
    ap.add_argument("--variants", default='{"default": {}}', help="JSON: {label: {option: value}}")
    ap.add_argument("--weights", default=None, help="weight file instead of the registered one")
    args = ap.parse_args()
    variants = json.loads(args.variants)
    pairs = homography_pairs(args.data)
    print(f"| options | MHA@1 | MHA@3 | MHA@5 | MMA@1 | MMA@3 |  ({args.model}, {len(pairs)} pairs)")
    for label, options in variants.items():
        torch.manual_seed(0)
        model = featmatch.load(args.model, weights=args.weights, **options)
        memo = _FeatureMemo()
        rows = []
        for p in pairs:
            arrays, attrs = _predict_one(model, p, memo)
            rows.append(score_pair({**arrays, **attrs}, p))
        s = summarize(rows)
        vals = [s["mha"][k] for k in ("1", "3", "5")] + [s["mma"][k] for k in ("1", "3")]
        print(f"| {label} | " + " | ".join(f"{100 * v:.1f}" for v in vals) + " |", flush=True)


if __name__ == "__main__":
    main()
