"""Export the weights of a ``featmatch train xfeat`` run as a float16 file for ``featmatch.load("xfeat", weights=...)``.

    python scripts/export_xfeat.py RUN_DIR/model.pt --out candidates/NAME.pt

Checks that the state dict loads strictly into ``xfeat`` (the run's ``model.pt`` / ``best.pt``,
or the ``model`` entry of its ``last.pt``), stores the network in float16 (half the size;
``featmatch.load`` casts back to float32; measure published numbers with this file, since the
rounding alone moves the 39-pair pose AUC by a point or two), writes it atomically and prints
its sha256 (for candidates/README.md or a model card).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import featmatch
from featmatch import hub
from featmatch.io import atomic_path


def export(weights: str | Path, out: str | Path) -> str:
    """Write ``weights`` (an XFeat state dict) to ``out`` in float16; returns its sha256."""
    # featmatch.load reads the file strictly (one-line WeightsError if it is not XFeat's) and
    # unwraps the "model" entry of a run's last.pt
    model = featmatch.load("xfeat", weights=weights)
    half = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in model.net.state_dict().items()}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        torch.save(half, tmp)
    return hub.sha256sum(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("weights", help="model.pt (or best.pt / last.pt) of a `featmatch train xfeat` run")
    ap.add_argument("--out", required=True, help="the float16 file to write")
    args = ap.parse_args()
    try:
        digest = export(args.weights, args.out)
    except featmatch.FeatmatchError as e:
        raise SystemExit(f"error: {e}") from None
    out = Path(args.out)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) sha256 {digest}")


if __name__ == "__main__":
    main()
