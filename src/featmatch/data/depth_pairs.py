"""Depth-and-pose pairs (MegaDepth / ScanNet style) for training with real geometry.

Layout of ``root``::

    pairs.json   [{"image0": "rel/path.jpg", "image1": ..., "depth0": "rel/d0.npy" | .h5 | .png,
                   "depth1": ..., "K0": [9 floats], "K1": [...], "T_0to1": [16 floats]}, ...]

Depth files: ``.npy`` (metres), ``.h5`` (dataset ``depth``, MegaDepth) or 16-bit ``.png``
(millimetres, ScanNet); 0 means unknown. Images and depths are resized to ``size`` and the
intrinsics scaled with the pixel-centre convention.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import FeatmatchError


def read_depth(path: Union[str, Path]) -> np.ndarray:
    """Depth map in metres (float32, 0 = unknown) from .npy, .h5 or 16-bit .png (mm)."""
    p = Path(path)
    if not p.is_file():
        raise FeatmatchError(f"depth file not found: {p}")
    if p.suffix == ".npy":
        d = np.load(p)
    elif p.suffix in (".h5", ".hdf5"):
        import h5py

        with h5py.File(p, "r") as f:
            d = f["depth"][()]
    elif p.suffix == ".png":
        import cv2

        d = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        if d is None:
            raise FeatmatchError(f"cannot read depth image {p}")
        d = d.astype(np.float32) / 1000.0
    else:
        raise FeatmatchError(f"unsupported depth format {p.suffix} ({p}); use .npy, .h5 or 16-bit .png")
    return np.nan_to_num(d.astype(np.float32))


def scale_intrinsics(K: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """Intrinsics after resizing by ``(sx, sy)`` (new = old * s), pixel-centre convention."""
    K = K.copy()
    K[0, 0] *= sx
    K[1, 1] *= sy
    K[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
    K[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
    return K


class DepthPairs(Dataset):
    """Pairs with depth maps, intrinsics and relative pose.

    Item: image0/1 ``(3, H, W)``, depth0/1 ``(H, W)``, K0/K1 ``(3, 3)``, T_0to1 ``(4, 4)``.
    """

    def __init__(self, root: Union[str, Path], size: Optional[tuple[int, int]] = (320, 256)):
        self.root = Path(root)
        index = self.root / "pairs.json"
        if not index.is_file():
            raise FeatmatchError(f"{index} not found; expected a depth-pairs root with pairs.json "
                                 "(list of image0, image1, depth0, depth1, K0, K1, T_0to1)")
        try:
            self.pairs = json.loads(index.read_text())
        except json.JSONDecodeError as e:
            raise FeatmatchError(f"{index} is not valid JSON ({e.msg} at line {e.lineno})") from None
        need = ("image0", "image1", "depth0", "depth1", "K0", "K1", "T_0to1")
        for i, p in enumerate(self.pairs):
            missing = [k for k in need if k not in p]
            if missing:
                raise FeatmatchError(f"{index}: pair {i} lacks {', '.join(missing)}")
        self.size = size

    def __len__(self) -> int:
        return len(self.pairs)

    def _load(self, img_rel: str, depth_rel: str, K: np.ndarray):
        import cv2

        from .synthetic import read_photo_u8

        img = read_photo_u8(self.root / img_rel)
        depth = read_depth(self.root / depth_rel)
        h, w = img.shape[:2]
        if self.size is not None and (w, h) != tuple(self.size):
            tw, th = self.size
            img = cv2.resize(img, (tw, th), interpolation=cv2.INTER_AREA)
            K = scale_intrinsics(K, tw / w, th / h)
            w, h = tw, th
        if depth.shape != (h, w):
            depth = cv2.resize(depth, (w, h), interpolation=cv2.INTER_NEAREST)
        return (torch.from_numpy(img).permute(2, 0, 1).float() / 255.0, torch.from_numpy(depth),
                torch.from_numpy(K.astype(np.float32)))

    def __getitem__(self, i: int) -> dict:
        p = self.pairs[i]
        K0 = np.asarray(p["K0"], np.float64).reshape(3, 3)
        K1 = np.asarray(p["K1"], np.float64).reshape(3, 3)
        im0, d0, K0t = self._load(p["image0"], p["depth0"], K0)
        im1, d1, K1t = self._load(p["image1"], p["depth1"], K1)
        T = torch.tensor(np.asarray(p["T_0to1"], np.float32).reshape(4, 4))
        return {"image0": im0, "image1": im1, "depth0": d0, "depth1": d1, "K0": K0t, "K1": K1t,
                "T_0to1": T, "index": torch.tensor(i)}
