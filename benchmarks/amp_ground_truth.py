"""What bfloat16 autocast does to homography ground truth on CPU (why the XFeat and LoFTR
recipes keep autocast to the network's forward, ``amp_scope = "model"``).

    python benchmarks/amp_ground_truth.py

One fixed 320x256 homography: the largest error of 1,000 warped points, and how many of
XFeat's coarse correspondences / fine labels and LoFTR's coarse ground-truth cells change
when they are computed under ``torch.autocast("cpu", dtype=torch.bfloat16)``.
"""

from __future__ import annotations

import torch

from featmatch.geometry.warp import warp_points_homography
from featmatch.train.losses.loftr import coarse_gt_homography
from featmatch.train.recipes.xfeat import coarse_correspondences_h


def main() -> None:
    torch.manual_seed(0)
    H = torch.tensor([[0.9, -0.3, 40.0], [0.25, 0.95, -10.0], [1e-4, 2e-4, 1.0]])
    pts = torch.rand(1, 1000, 2) * torch.tensor([320.0, 256.0])
    a, _ = warp_points_homography(pts, H[None])
    x32 = coarse_correspondences_h(H, None, (32, 40))
    g32 = coarse_gt_homography(H[None], (32, 40), (32, 40))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        b, _ = warp_points_homography(pts, H[None])
        x16 = coarse_correspondences_h(H, None, (32, 40))
        g16 = coarse_gt_homography(H[None], (32, 40), (32, 40))
    print(f"warped points: max error {float((a - b.float()).abs().max()):.2f} px under bfloat16 autocast")
    ref = {int(j): (int(i), int(l)) for i, j, l in zip(*x32)}
    low = {int(j): (int(i), int(l)) for i, j, l in zip(*x16)}
    common = set(ref) & set(low)
    changed = sum(ref[j] != low[j] for j in common)
    print(f"XFeat: {len(ref)} correspondences in float32, {len(low)} under autocast; of the {len(common)} "
          f"image-1 cells in both, {changed} get another image-0 cell or fine label")
    print(f"LoFTR: {g32.i.numel()} coarse ground-truth matches in float32, {g16.i.numel()} under autocast; "
          f"{int((g32.matrix != g16.matrix).sum())} cells differ")


if __name__ == "__main__":
    main()
