"""XFeat* sub-pixel bias: mean offset of matches on translated copies of photos.

    python benchmarks/xfeat_star_bias.py --photos ../shared/data/photos

For each photo (resized to 640x480) and each shift, the photo is translated with
cv2.warpAffine (bilinear) and matched to the original; reported are the mean offset
(x, y) of points1 - points0 - shift over matches within 4 px of the truth and more than
16 px from the border, and the share within 1 px, for the official decoder
(official_compat=True), featmatch's decoder without the final Lucas-Kanade step
(subpixel="none") and featmatch's default.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

import featmatch

PHOTOS = ("tum_fr3_office_1341847980.722988.png", "imc_sacre_coeur_02928139_3448003521.jpg",
          "imc_london_bridge_19481797_2295892421.jpg")
SHIFTS = ((0, 0), (8, 0), (3, 0), (0, 5), (3.3, -2.6), (-1.5, 0.5))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", required=True)
    ap.add_argument("--top-k", type=int, default=8000)
    args = ap.parse_args()
    variants = (("official", {"official_compat": True}), ("featmatch, subpixel='none'", {"subpixel": "none"}),
                ("featmatch default", {}))
    for label, opts in variants:
        model = featmatch.load("xfeat-star", top_k=args.top_k, **opts)
        print(f"== {label}")
        for name in PHOTOS:
            img = cv2.imread(str(Path(args.photos) / name), cv2.IMREAD_COLOR)[..., ::-1]
            img = np.ascontiguousarray(cv2.resize(img, (640, 480), interpolation=cv2.INTER_AREA))
            cells = []
            for dx, dy in SHIFTS:
                moved = cv2.warpAffine(img, np.float32([[1, 0, dx], [0, 1, dy]]), (640, 480), flags=cv2.INTER_LINEAR)
                m = model.match(img, moved)
                d = (m.points1 - m.points0).numpy() - [dx, dy]
                p = m.points0.numpy()
                inside = (p[:, 0] > 16) & (p[:, 0] < 624) & (p[:, 1] > 16) & (p[:, 1] < 464)
                d = d[inside]
                d = d[np.linalg.norm(d, axis=1) < 4]
                within = (np.linalg.norm(d, axis=1) < 1).mean()
                cells.append(f"({dx:g},{dy:g}): ({d[:, 0].mean():+.2f}, {d[:, 1].mean():+.2f}) {within:.0%}")
            print(f"{name[:28]:28s} " + " | ".join(cells))


if __name__ == "__main__":
    main()
