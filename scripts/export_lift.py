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
from featmatch.models.lift import LIFT, SUPPORT_KEY
from featmatch.registry import make_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("weights", help="model.pt of a `featmatch train lift --stage det` run")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "src/featmatch/weights/lift.pt"))
    ap.add_argument("--support-scale", type=float, default=None,
                    help="support scale ORI / DESC were trained with (recorded in the file, used by "
                         "featmatch.load('lift') unless support_scale is given); default: the run's "
                         "(RUN/last.pt next to the weights), else the weights' own record, else 1.0")
    args = ap.parse_args()
    state = hub.read_state_dict(args.weights)
    model = LIFT(make_config("lift"))
    model.load_weights(state, source=args.weights)
    support = args.support_scale
    last = Path(args.weights).with_name("last.pt")
    if support is None and last.is_file():
        support = torch.load(last, map_location="cpu", weights_only=False).get("extra", {}).get("support_scale")
    if support is None:
        support = model.trained_support_scale
    half = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
    if support != 1.0:  # files of the paper's support stay as before (no entry)
        half[SUPPORT_KEY] = torch.tensor(float(support))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        torch.save(half, tmp)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB, support_scale {support}) sha256 {hub.sha256sum(out)}")


if __name__ == "__main__":
    main()
