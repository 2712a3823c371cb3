"""Measure the response curve of XFeat*'s refinement MLP (REFINE_RESPONSE in models/xfeat.py).

For each photo (640x480) and each integer shift t in -4..4 px along x (then y), the image is
translated by t (nearest neighbour, so content moves by exactly t pixels), every 1/8 cell of
the shifted image is paired with the same cell of the original, and the refinement MLP's
expected offset class (softmax temperature 3) is averaged. The true displacement of the
image-1 anchor inside the image-0 cell is then -t.

    python scripts/calibrate_xfeat_star.py --photos ../shared/data/photos
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

import featmatch

PHOTOS = ("skimage_astronaut.png", "skimage_chelsea.png", "skimage_coffee.png", "skimage_camera.png",
          "skimage_brick.png", "skimage_rocket.jpg")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", required=True)
    args = ap.parse_args()
    net = featmatch.load("xfeat-star").net
    ar = torch.arange(8.0)
    resp = {0: {t: [] for t in range(-4, 5)}, 1: {t: [] for t in range(-4, 5)}}
    with torch.inference_mode():
        for name in PHOTOS:
            img = cv2.imread(str(Path(args.photos) / name), cv2.IMREAD_COLOR)[..., ::-1]
            img = cv2.resize(img, (640, 480), interpolation=cv2.INTER_AREA)
            m0, _, _ = net(torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float() / 255)
            h, w = m0.shape[-2:]
            f0 = m0[0].permute(1, 2, 0).reshape(-1, 64)
            for axis in (0, 1):
                for t in range(-4, 5):
                    shift = np.float32([[1, 0, t if axis == 0 else 0], [0, 1, t if axis == 1 else 0]])
                    moved = cv2.warpAffine(img, shift, (640, 480), flags=cv2.INTER_NEAREST)
                    m1, _, r1 = net(torch.from_numpy(moved).permute(2, 0, 1)[None].float() / 255)
                    f1 = m1[0].permute(1, 2, 0).reshape(-1, 64)
                    j = torch.arange(h * w)
                    jy, jx = j // w, j % w
                    ok = (jx > 1) & (jx < w - 2) & (jy > 1) & (jy < h - 2) & (r1.reshape(-1) > r1.median())
                    p = F.softmax(3 * net.refiner(torch.cat([f0[ok], f1[ok]], -1)), -1).view(-1, 8, 8)
                    e = (p.sum(1) * ar).sum(-1) if axis == 0 else (p.sum(2) * ar).sum(-1)
                    resp[axis][-t].append(e)
    for axis, label in ((0, "x"), (1, "y")):
        vals = [float(torch.cat(resp[axis][d]).mean()) for d in range(-4, 5)]
        print(f"{label}: displacement -4..4 -> mean class", ", ".join(f"{v:.2f}" for v in vals))


if __name__ == "__main__":
    main()
