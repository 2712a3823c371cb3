"""Export a ``featmatch train loftr`` run as the shipped ``loftr.tiny`` checkpoint.

    python scripts/export_loftr_tiny.py RUN_DIR/model.pt [--out src/featmatch/weights/loftr_tiny.pt]

Checks that the state dict loads strictly into ``loftr.tiny``, stores it in float16 (half
the size; ``featmatch.load`` casts back to float32, and the published numbers are measured
with this file), writes it atomically and prints its sha256 for the model card
(``LOFTR_TINY_WEIGHTS`` in ``featmatch/models/loftr/__init__.py``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from featmatch import hub
from featmatch.io import atomic_path
from featmatch.models.loftr import LoFTR
from featmatch.registry import make_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("weights", help="model.pt of a `featmatch train loftr` run")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "src/featmatch/weights/loftr_tiny.pt"))
    args = ap.parse_args()
    state = hub.read_state_dict(args.weights)
    model = LoFTR(make_config("loftr.tiny"))
    model.load_state_dict(model.remap_state_dict(state), strict=True)
    half = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        torch.save(half, tmp)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) sha256 {hub.sha256sum(out)}")


if __name__ == "__main__":
    main()
