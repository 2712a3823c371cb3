"""Descriptor check on held-out LIFT quadruplets: featmatch's trained DESC vs the authors'
released Theano descriptor, on the same crops (known keypoints, mapped SIFT orientations).

    python scripts/lift_descriptor_check.py --patches RUN/val_patches.npz \
        --weights RUN/det/model.pt --authors PATH/new-CNN3-picc-iter-56k.h5 [--quads 1000]

Prints ROC AUC and FPR at 95 % recall of positive (P1, P2) vs negative (P1, P3) Euclidean
descriptor distances, raw descriptors as each network was trained (the recipe's validation,
:meth:`featmatch.train.recipes.lift.LIFTRecipe.validate` with ``stage="desc"``).
"""

from __future__ import annotations

import argparse
import json

import torch

import featmatch
from featmatch.data.lift_patches import LIFTQuadruplets
from featmatch.train.recipes.lift import LIFTRecipe, LIFTRecipeConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patches", required=True)
    ap.add_argument("--weights", default=None, help="featmatch LIFT weights (default: the installed checkpoint)")
    ap.add_argument("--authors", default=None, help="the authors' new-CNN3-picc-iter-56k.h5")
    ap.add_argument("--quads", type=int, default=1000)
    args = ap.parse_args()
    torch.set_num_threads(1)
    val = LIFTQuadruplets(args.patches)
    rec = LIFTRecipe(LIFTRecipeConfig(stage="desc", val_quads=args.quads), val_set=val)
    res = {}
    models = {"featmatch": featmatch.load("lift", weights=args.weights)}
    if args.authors:
        models["authors"] = featmatch.load("lift", weights=args.weights, descriptor_weights=args.authors)
    for name, m in models.items():
        with torch.no_grad():
            v = rec.validate(m.net)
        res[name] = {k: round(v[k], 4) for k in ("auc", "fpr95", "pos_dist", "neg_pair_dist")}
    print(json.dumps({"quadruplets": min(args.quads, val.size), **res}, indent=1))


if __name__ == "__main__":
    main()
