"""Export a LIFT training run (the ``det`` stage's ``model.pt``, which holds all three
networks) as the shipped ``lift`` checkpoint.

    python scripts/export_lift.py RUN/det/model.pt [--out src/featmatch/weights/lift.pt]

Checks that the state dict loads strictly into ``lift``, stores it in float16 (the
published numbers are measured with this file; ``featmatch.load`` casts back to float32),
writes it atomically and prints its sha256 for the model card (``LIFT_WEIGHTS`` in
``featmatch/models/lift.py``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from featmatch import hub
from featmatch.io import atomic_path
from featmatch.models.lift import LIFT
from featmatch.registry import make_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("weights", help="model.pt of a `featmatch train lift --stage det` run")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "src/featmatch/weights/lift.pt"))
    args = ap.parse_args()
    state = hub.read_state_dict(args.weights)
    model = LIFT(make_config("lift"))
    model.load_weights(state, source=args.weights)
    half = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        torch.save(half, tmp)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB) sha256 {hub.sha256sum(out)}")


if __name__ == "__main__":
    main()
