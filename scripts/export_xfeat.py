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

from featmatch import hub
from featmatch.io import atomic_path
from featmatch.models.xfeat import XFeat
from featmatch.registry import make_config


def export(weights: str | Path, out: str | Path) -> str:
    """Write ``weights`` (an XFeat state dict) to ``out`` in float16; returns its sha256."""
    state = hub.read_state_dict(weights)  # unwraps the "model" entry of a run's last.pt
    model = XFeat(make_config("xfeat"))
    model.load_state_dict(model.remap_state_dict(state), strict=True)
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
    digest = export(args.weights, args.out)
    out = Path(args.out)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) sha256 {digest}")


if __name__ == "__main__":
    main()
