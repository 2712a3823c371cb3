"""Synthetic homography pairs from any folder of images.

Every sample is a pure function of ``(seed, index)``: the same index always gives the same
pair, whatever the worker, the order or a resumed run. Image 0 is a random crop of a photo;
image 1 is the photo warped by ``H_0to1 @ crop``; both get independent photometric
augmentation (contrast, brightness, gamma, blur, noise, JPEG re-encoding). Ground truth:
``H_0to1`` (dense correspondences ``x1 ~ H x0``) and a validity mask of image 1 (pixels
whose content came from inside the photo).

Photos are read (any format :func:`featmatch.image.read_image` decodes; grey, colour or
16-bit) inside ``__getitem__``, so DataLoader workers decode and augment in parallel;
:func:`worker_init` keeps OpenCV to one thread per worker.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import FeatmatchError, UsageError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".ppm", ".pgm", ".bmp", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class SyntheticConfig:
    """Geometric and photometric augmentation of synthetic pairs."""

    size: tuple[int, int] = (320, 256)  # (W, H) of both images
    seed: int = 0  # every sample is a function of (seed, index)
    max_rotation_deg: float = 25.0  # in-plane rotation range (+/-)
    scale_range: tuple[float, float] = (0.75, 1.3)  # isotropic scale of image 1 w.r.t. image 0
    max_translation: float = 0.12  # translation, fraction of the image size (+/-)
    perspective: float = 0.12  # corner jitter, fraction of the image size (+/-)
    crop_scale: tuple[float, float] = (0.5, 1.0)  # crop side relative to the photo's short side
    brightness: float = 0.2  # additive, +/-
    contrast: float = 0.3  # multiplicative around the mean, 1 +/- this
    gamma: tuple[float, float] = (0.75, 1.35)
    noise_std: float = 0.02  # max std of Gaussian noise (uniform in [0, this])
    blur_prob: float = 0.25  # probability of a Gaussian blur
    blur_sigma: tuple[float, float] = (0.4, 1.5)
    jpeg_prob: float = 0.0  # probability of a JPEG re-encoding (after noise); 0 draws nothing
    jpeg_quality: tuple[int, int] = (30, 95)  # JPEG quality range (inclusive)
    colour_cast: float = 0.0  # per-channel gain 1 +/- this (illuminant colour); 0 draws nothing
    shade_prob: float = 0.0  # probability of a soft shadow / light patch; 0 draws nothing
    shade_strength: float = 0.8  # shading factor 1 - a * mask, a in [-strength / 2, strength]
    length: int = 1_000_000  # nominal dataset length (indices are unbounded in practice)


def list_images(folder: Union[str, Path], recursive: bool = True) -> list[Path]:
    """Image files in ``folder`` and, by default, its sub-folders (sorted, hidden ones skipped).

    Raises a clear error if there are none.
    """
    p = Path(folder)
    if not p.is_dir():
        raise FeatmatchError(f"image folder not found: {p}")
    candidates = p.rglob("*") if recursive else p.iterdir()
    files = sorted(f for f in candidates if f.suffix.lower() in IMAGE_EXTS and f.is_file()
                   and not any(part.startswith(".") for part in f.relative_to(p).parts))
    if not files:
        raise FeatmatchError(f"no images ({', '.join(IMAGE_EXTS)}) in {p}")
    return files


def read_photo_u8(path: Union[str, Path]) -> np.ndarray:
    """A photo as ``(H, W, 3)`` uint8 RGB: :func:`featmatch.image.read_image`, float images
    scaled from [0, 1], grey ones repeated over three channels (the input of
    :func:`photometric`)."""
    from ..image import read_image

    img = read_image(path)
    if img.dtype != np.uint8:
        img = (np.clip(img, 0, 1) * 255).astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, 2)
    return img


def random_homography(rng: np.random.Generator, size_wh: tuple[int, int], cfg: SyntheticConfig) -> np.ndarray:
    """A random ``H_0to1`` about the image centre: rotation, scale, translation, perspective.

    Shape: returns ``(3, 3)`` float64 with ``H[2, 2] = 1``.
    """
    w, h = size_wh
    c = np.array([[1, 0, -(w - 1) / 2], [0, 1, -(h - 1) / 2], [0, 0, 1]])
    a = math.radians(rng.uniform(-cfg.max_rotation_deg, cfg.max_rotation_deg))
    s = math.exp(rng.uniform(math.log(cfg.scale_range[0]), math.log(cfg.scale_range[1])))
    rs = np.array([[s * math.cos(a), -s * math.sin(a), 0], [s * math.sin(a), s * math.cos(a), 0], [0, 0, 1]])
    t = rng.uniform(-cfg.max_translation, cfg.max_translation, 2) * [w, h]
    tr = np.array([[1, 0, t[0]], [0, 1, t[1]], [0, 0, 1]])
    H = np.linalg.inv(c) @ tr @ rs @ c
    if cfg.perspective > 0:
        import cv2

        src = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float32)
        dst = src + rng.uniform(-cfg.perspective, cfg.perspective, (4, 2)).astype(np.float32) * [w, h]
        P = cv2.getPerspectiveTransform(src, dst.astype(np.float32)).astype(np.float64)
        H = P @ H
    return H / H[2, 2]


APPEARANCE_PRESETS = {
    # the defaults of SyntheticConfig (what every run before the option used)
    "standard": {},
    # illumination changes single photos otherwise never show: stronger tone changes, a colour
    # cast (which changes the grey levels of differently coloured surfaces relative to each
    # other) and soft shadows / light patches (SuperPoint's "additive shade", as a multiplicative
    # shading here); see docs/training.md
    "strong": {"contrast": 0.5, "brightness": 0.3, "gamma": (0.5, 2.0), "colour_cast": 0.3,
               "shade_prob": 0.5, "shade_strength": 0.8},
}


def appearance_preset(name: str) -> dict:
    """The :class:`SyntheticConfig` fields of an appearance preset (``standard``, ``strong``)."""
    if name not in APPEARANCE_PRESETS:
        raise UsageError(f"unknown appearance preset '{name}'; use one of {', '.join(APPEARANCE_PRESETS)}")
    return dict(APPEARANCE_PRESETS[name])


def _shade_mask(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A soft mask in [0, 1]: 1-4 random filled ellipses, blurred by a random wide Gaussian."""
    import cv2

    m = np.zeros((h, w), np.float32)
    for _ in range(int(rng.integers(1, 5))):
        centre = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
        axes = (max(1, int(rng.uniform(0.1, 0.5) * w)), max(1, int(rng.uniform(0.1, 0.5) * h)))
        cv2.ellipse(m, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
    sigma = rng.uniform(0.02, 0.1) * max(h, w)
    return cv2.GaussianBlur(m, (0, 0), sigma)


def photometric(img: np.ndarray, rng: np.random.Generator, cfg: SyntheticConfig) -> tuple[np.ndarray, dict]:
    """Random contrast, brightness, gamma, colour cast, shading, blur, noise and JPEG
    re-encoding, in this order.

    Contrast scales around the image mean by ``1 + U(-contrast, contrast)``, brightness adds
    ``U(-brightness, brightness)``, then the clipped image is raised to ``U(*gamma)``; if
    ``colour_cast`` > 0 each channel is multiplied by ``1 + U(-colour_cast, colour_cast)``;
    with probability ``shade_prob`` the image is multiplied by ``1 - a * mask`` (a soft mask of
    blurred ellipses, ``a = U(-shade_strength / 2, shade_strength)``: shadows and light
    patches); with probability ``blur_prob`` a Gaussian blur of sigma ``U(*blur_sigma)``; Gaussian noise of
    std ``U(0, noise_std)``; with probability ``jpeg_prob`` a JPEG round trip at quality
    ``randint(*jpeg_quality)``. The parameters drawn are returned too (for tests and logs).

    Shape: img ``(H, W, 3)`` uint8 -> ``(H, W, 3)`` float32 in [0, 1] and a dict.
    """
    import cv2

    if img.dtype != np.uint8:
        raise ValueError(f"photometric expects a uint8 image, got {img.dtype}")
    mean = (img.astype(np.float32) / 255.0).mean()
    p: dict = {"contrast": 1 + rng.uniform(-cfg.contrast, cfg.contrast)}
    p["brightness"] = rng.uniform(-cfg.brightness, cfg.brightness)
    p["gamma"] = rng.uniform(*cfg.gamma)
    # contrast, brightness and gamma are a function of the pixel value: one 256-entry table
    # (the same float32 operations as on the whole image, ~10x faster)
    lut = np.arange(256, dtype=np.float32) / 255.0
    lut = np.clip((lut - mean) * p["contrast"] + mean + p["brightness"], 0, 1) ** p["gamma"]
    x = lut.astype(np.float32)[img]
    # the options below draw nothing when off, so the pairs of runs made before them are unchanged
    p["colour_gains"] = (1.0, 1.0, 1.0)
    if cfg.colour_cast > 0:
        gains = 1 + rng.uniform(-cfg.colour_cast, cfg.colour_cast, 3)
        p["colour_gains"] = tuple(float(g) for g in gains)
        x = np.clip(x * gains.astype(np.float32), 0, 1)
    p["shade"] = 0.0
    if cfg.shade_prob > 0 and rng.uniform() < cfg.shade_prob:
        p["shade"] = rng.uniform(-cfg.shade_strength / 2, cfg.shade_strength)
        mask = _shade_mask(rng, x.shape[0], x.shape[1])
        x = np.clip(x * (1 - p["shade"] * mask)[..., None], 0, 1)
    p["blur_sigma"] = 0.0
    if rng.uniform() < cfg.blur_prob:
        p["blur_sigma"] = rng.uniform(*cfg.blur_sigma)
        x = cv2.GaussianBlur(x, (0, 0), p["blur_sigma"])
    p["noise_std"] = 0.0
    if cfg.noise_std > 0:
        p["noise_std"] = rng.uniform(0, cfg.noise_std)
        x = x + rng.normal(0, p["noise_std"], x.shape).astype(np.float32)
    x = np.clip(x, 0, 1).astype(np.float32)
    p["jpeg_quality"] = 0
    if cfg.jpeg_prob > 0 and rng.uniform() < cfg.jpeg_prob:
        p["jpeg_quality"] = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
        u8 = np.ascontiguousarray((x * 255 + 0.5).astype(np.uint8)[..., ::-1])  # RGB -> BGR for OpenCV
        ok, buf = cv2.imencode(".jpg", u8, [cv2.IMWRITE_JPEG_QUALITY, p["jpeg_quality"]])
        if ok:
            x = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32) / 255.0
    return np.ascontiguousarray(x), p


def worker_init(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: one torch thread per worker (the workers are the
    parallelism; more threads only compete with the training step for the cores).

    OpenCV's thread count is deliberately not touched here: ``cv2.setNumThreads`` in a forked
    worker deadlocks once the parent process has used OpenCV's thread pool (it waits for the
    parent's pool threads, which do not exist in the child). OpenCV calls in the workers work."""
    torch.set_num_threads(1)


class SyntheticPairs(Dataset):
    """Pairs of warped crops of the images in ``folder``.

    Item ``i`` is a dict of tensors:
        image0, image1: ``(3, H, W)`` float in [0, 1];
        H_0to1: ``(3, 3)`` float32, ``x1 ~ H_0to1 x0`` in pixels;
        valid1: ``(H, W)`` bool, image-1 pixels with real content;
        index: the sample index.
    """

    def __init__(self, folder: Union[str, Path, list], config: SyntheticConfig = SyntheticConfig(),
                 cache_size: int = 64):
        self.files = list(folder) if isinstance(folder, (list, tuple)) else list_images(folder)
        if not self.files:
            raise UsageError("SyntheticPairs needs at least one image")
        self.config = config
        self._cache: dict = {}
        self._cache_size = cache_size

    def __len__(self) -> int:
        return self.config.length

    def _photo(self, i: int) -> np.ndarray:
        if i not in self._cache:
            img = read_photo_u8(self.files[i])
            if len(self._cache) >= self._cache_size:
                self._cache.pop(next(iter(self._cache)))
            self._cache[i] = img
        return self._cache[i]

    def __getitem__(self, index: int) -> dict:
        import cv2

        cfg = self.config
        rng = np.random.default_rng([cfg.seed, int(index)])
        photo = self._photo(int(rng.integers(len(self.files))))
        ph, pw = photo.shape[:2]
        w, h = cfg.size
        # crop: a window of the photo with the output aspect ratio, mapped to (w, h)
        side = min(pw / w, ph / h) * rng.uniform(*cfg.crop_scale)
        cw, ch = w * side, h * side
        x0 = rng.uniform(0, max(pw - cw, 0))
        y0 = rng.uniform(0, max(ph - ch, 0))
        s = 1.0 / side
        A = np.array([[s, 0, (0.5 - x0) * s - 0.5], [0, s, (0.5 - y0) * s - 0.5], [0, 0, 1.0]])
        H = random_homography(rng, (w, h), cfg)
        img0 = cv2.warpPerspective(photo, A, (w, h), flags=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_REFLECT)
        M = H @ A
        img1 = cv2.warpPerspective(photo, M, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        valid = cv2.warpPerspective(np.ones((ph, pw), np.uint8), M, (w, h), flags=cv2.INTER_NEAREST,
                                    borderMode=cv2.BORDER_CONSTANT)
        a, _ = photometric(img0, rng, cfg)
        b, _ = photometric(img1, rng, cfg)
        return {
            "image0": torch.from_numpy(a).permute(2, 0, 1).contiguous(),
            "image1": torch.from_numpy(b).permute(2, 0, 1).contiguous(),
            "H_0to1": torch.from_numpy(H.astype(np.float32)),
            "valid1": torch.from_numpy(valid > 0),
            "index": torch.tensor(int(index)),
        }
