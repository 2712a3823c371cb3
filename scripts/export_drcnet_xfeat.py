"""Export a ``featmatch train drcnet --backbone xfeat`` run as the shipped ``drcnet.xfeat``
checkpoint.

    python scripts/export_drcnet_xfeat.py RUN_DIR/model.pt [--out src/featmatch/weights/drcnet_xfeat.pt]

Keeps only what featmatch trained (the FPN head ``FeatureExtraction.inner_block_list``,
``coarse_layer_block``, ``fine_layer_block`` and ``NeighConsensus``), checks that the
frozen backbone in the run equals the official XFeat weights (so loading the head on top
of ``xfeat.pt`` reproduces the run), stores float16, writes atomically and prints the
sha256 for the model card (``DRCNET_XFEAT_WEIGHTS`` in ``featmatch/models/drcnet/__init__.py``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from featmatch import hub
from featmatch.io import atomic_path
from featmatch.models.drcnet.model import BACKBONE_PREFIX as BACKBONE, DRCNet, official_backbone_state
from featmatch.registry import make_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("weights", help="model.pt of a `featmatch train drcnet --backbone xfeat` run")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "src/featmatch/weights/drcnet_xfeat.pt"))
    args = ap.parse_args()
    state = hub.read_state_dict(args.weights)
    model = DRCNet(make_config("drcnet.xfeat"))
    model.load_state_dict(state, strict=True)
    official = official_backbone_state("xfeat")
    for k, v in official.items():
        if not torch.equal(state[BACKBONE + k].float(), v.float()):
            raise SystemExit(f"the run's backbone differs from the official XFeat weights at {k}")
    head = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()
            if not k.startswith(BACKBONE)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        torch.save(head, tmp)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB, {len(head)} tensors) sha256 {hub.sha256sum(out)}")


if __name__ == "__main__":
    main()
