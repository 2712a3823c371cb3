"""Classical baselines through OpenCV: SIFT, ORB and AKAZE with the featmatch interface.

Each is an :class:`~featmatch.models.base.Extractor` (``extract``, ``match_features``,
``match``), so every benchmark table can carry them next to the learned methods:

* ``sift`` (Lowe, IJCV 2004): OpenCV ``SIFT``; 128-d float descriptors, L2-normalised
  (``rootsift=True``: RootSIFT, Arandjelovic & Zisserman CVPR 2012); matched by mutual
  nearest neighbour with Lowe's ratio test (0.8, both directions).
* ``orb`` (Rublee et al., ICCV 2011): OpenCV ``ORB``; 256-bit binary descriptors stored
  as ``uint8`` bytes ``(N, 32)``; mutual nearest neighbour in Hamming distance.
* ``akaze`` (Alcantarilla et al., BMVC 2013): OpenCV ``AKAZE`` with its binary MLDB
  descriptor, ``uint8`` bytes ``(N, 61)``; mutual nearest neighbour in Hamming distance.

No weights (``weights_origin="none"``). Keypoints come back in the caller's pixels with
featmatch's pixel-centre convention (centre of the top-left pixel at ``(0, 0)``). OpenCV's
own coordinates are off that convention by a known amount, corrected here and checked by
matching an image with its 2x bilinear upscale: SIFT's are +0.25 px (first octave built
by doubling the image, points halved back), ORB's pyramid-level points are scaled back
with ``p * s`` instead of ``(p + 0.5) * s - 0.5`` (-0.5 (s - 1) px, up to -1.3 px at level
7); AKAZE's need no correction. ``scales`` hold OpenCV's keypoint ``size`` (diameter of the described
region, pixels) and ``orientations`` its angle in radians (0 for AKAZE/ORB when
undefined). Match ``scores`` are the cosine similarity (SIFT) or ``1 - hamming / bits``
(binary descriptors), so they lie in ``[0, 1]`` for all three.

OpenCV is imported inside the functions that need it, except once at registration to
see whether this build has AKAZE (OpenCV 5 moved it to opencv-contrib; without it
``akaze`` is not registered).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import torch

from ..errors import FeatmatchError, UsageError
from ..image import MAX_PIXELS_DEFAULT, to_grey
from ..registry import ModelCard, register
from ..types import Features
from .base import Extractor
from .nn_matcher import MNNConfig, MutualNN


class ModelUnavailableError(FeatmatchError):
    """The model needs a library feature this installation lacks (message names the fix)."""


def _sift_matcher() -> MNNConfig:
    return MNNConfig(metric="cosine", mutual=True, ratio=0.8)


def _binary_matcher() -> MNNConfig:
    return MNNConfig(metric="hamming", mutual=True)


@dataclass(frozen=True)
class SIFTConfig:
    """Options of the OpenCV SIFT extractor."""

    top_k: int = 4096  # keep the k strongest keypoints (by detector response)
    rootsift: bool = False  # RootSIFT: L1-normalise, square root (then unit L2 norm)
    n_octave_layers: int = 3  # OpenCV nOctaveLayers
    contrast_threshold: float = 0.04  # OpenCV contrastThreshold (lower: more keypoints)
    edge_threshold: float = 10.0  # OpenCV edgeThreshold
    sigma: float = 1.6  # OpenCV sigma of the first octave
    resize: Optional[int] = None  # resize so the long side is this many pixels (None: keep)
    max_pixels: int = MAX_PIXELS_DEFAULT  # larger images are downscaled with a warning
    matcher: MNNConfig = field(default_factory=_sift_matcher)  # mutual NN + ratio test 0.8


@dataclass(frozen=True)
class ORBConfig:
    """Options of the OpenCV ORB extractor."""

    top_k: int = 4096  # OpenCV nfeatures: keypoints kept (by Harris / FAST response)
    scale_factor: float = 1.2  # pyramid decimation ratio
    n_levels: int = 8  # pyramid levels
    edge_threshold: int = 31  # border where no keypoint is detected (>= patch_size)
    patch_size: int = 31  # size of the patch used by the oriented BRIEF descriptor
    fast_threshold: int = 20  # FAST threshold
    resize: Optional[int] = None  # resize so the long side is this many pixels (None: keep)
    max_pixels: int = MAX_PIXELS_DEFAULT  # larger images are downscaled with a warning
    matcher: MNNConfig = field(default_factory=_binary_matcher)  # mutual NN, Hamming


@dataclass(frozen=True)
class AKAZEConfig:
    """Options of the OpenCV AKAZE extractor (MLDB binary descriptor)."""

    top_k: int = 4096  # keep the k strongest keypoints (by detector response)
    threshold: float = 0.001  # detector response threshold (lower: more keypoints)
    n_octaves: int = 4  # maximum octave evolution
    n_octave_layers: int = 4  # sublevels per octave
    resize: Optional[int] = None  # resize so the long side is this many pixels (None: keep)
    max_pixels: int = MAX_PIXELS_DEFAULT  # larger images are downscaled with a warning
    matcher: MNNConfig = field(default_factory=_binary_matcher)  # mutual NN, Hamming


def _to_uint8_grey(x: torch.Tensor) -> np.ndarray:
    """``(B, C, H, W)`` float [0, 1] -> ``(B, H, W)`` uint8 grey (channel mean)."""
    g = to_grey(x)[:, 0].detach().cpu().float().clamp(0, 1)
    return (g * 255.0 + 0.5).to(torch.uint8).numpy()


class OpenCVExtractor(Extractor):
    """Shared code: run an OpenCV Feature2D per image, keep the top-k, pad to a batch.

    Subclasses set ``descriptor_dim``, ``descriptor_dtype`` and implement
    :meth:`_create` (the ``cv2.Feature2D``) and optionally :meth:`_post_descriptors`.
    """

    descriptor_dim: int = 0
    descriptor_dtype: torch.dtype = torch.float32
    min_image_side = 16

    def __init__(self, config: Any):
        super().__init__(config)
        if config.top_k < 1:
            raise UsageError(f"top_k must be at least 1, got {config.top_k}")
        self.matcher = MutualNN(config.matcher)
        self._detector = None

    def _create(self) -> Any:
        raise NotImplementedError

    def _post_descriptors(self, desc: np.ndarray) -> np.ndarray:
        return desc

    def _fix_points(self, pts: np.ndarray, octave: np.ndarray) -> np.ndarray:
        """Map OpenCV's keypoint coordinates to featmatch's pixel-centre convention."""
        return pts

    def _detect_one(self, img: np.ndarray) -> tuple[np.ndarray, ...]:
        if self._detector is None:
            self._detector = self._create()
        kps, desc = self._detector.detectAndCompute(img, None)
        if desc is None or len(kps) == 0:
            empty = np.zeros((0,), np.float32)
            np_dtype = np.uint8 if self.descriptor_dtype == torch.uint8 else np.float32
            return (np.zeros((0, 2), np.float32), empty, np.zeros((0, self.descriptor_dim), np_dtype),
                    empty, empty)
        pts = np.array([k.pt for k in kps], np.float64).reshape(-1, 2)
        pts = self._fix_points(pts, np.array([k.octave for k in kps], np.int64)).astype(np.float32)
        resp = np.array([k.response for k in kps], np.float32)
        size = np.array([k.size for k in kps], np.float32)
        ang = np.array([k.angle for k in kps], np.float32)
        ang = np.where(ang < 0, 0.0, np.deg2rad(ang)).astype(np.float32)  # -1 = undefined
        order = np.argsort(-resp, kind="stable")[: self.config.top_k]
        desc = self._post_descriptors(desc[order])
        return pts[order], resp[order], desc, size[order], ang[order]

    def _extract(self, x: torch.Tensor) -> Features:
        imgs = _to_uint8_grey(x)
        items = []
        for img in imgs:
            pts, resp, desc, size, ang = self._detect_one(img)
            d = torch.from_numpy(np.ascontiguousarray(desc))
            d = d.to(self.descriptor_dtype) if self.descriptor_dtype != torch.uint8 else d
            items.append(Features(torch.from_numpy(pts), torch.from_numpy(resp), d,
                                  (int(x.shape[-1]), int(x.shape[-2])), None,
                                  torch.from_numpy(size), torch.from_numpy(ang)))
        feats = Features.stack(items)
        return feats.to(x.device)

    def _empty_features(self, b: int, size_wh: tuple[int, int]) -> Features:
        f = super()._empty_features(b, size_wh)
        if self.descriptor_dtype == torch.uint8:
            f = Features(f.keypoints, f.keypoint_scores, f.descriptors.to(torch.uint8), f.image_size, f.mask)
        return f

    def __getstate__(self) -> dict:  # cv2 objects do not pickle; rebuilt lazily
        state = self.__dict__.copy()
        state["_detector"] = None
        return state


class SIFT(OpenCVExtractor):
    """OpenCV SIFT: DoG keypoints, 128-d float descriptors (unit L2 norm)."""

    descriptor_dim = 128

    def _create(self) -> Any:
        import cv2

        c = self.config
        return cv2.SIFT_create(nfeatures=c.top_k, nOctaveLayers=c.n_octave_layers,
                               contrastThreshold=c.contrast_threshold,
                               edgeThreshold=c.edge_threshold, sigma=c.sigma)

    def _fix_points(self, pts: np.ndarray, octave: np.ndarray) -> np.ndarray:
        # OpenCV builds its first octave by doubling the image with a centre-aligned bilinear
        # resize (x -> 2x + 0.5) but maps points back with x / 2: every point is +0.25 px off.
        return pts - 0.25

    def _post_descriptors(self, desc: np.ndarray) -> np.ndarray:
        d = desc.astype(np.float32)
        if self.config.rootsift:
            d = np.sqrt(d / np.maximum(np.abs(d).sum(1, keepdims=True), 1e-12))
        return d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)


class ORB(OpenCVExtractor):
    """OpenCV ORB: oriented FAST keypoints, 256-bit rBRIEF descriptors (uint8 bytes)."""

    descriptor_dim = 32
    descriptor_dtype = torch.uint8

    def _create(self) -> Any:
        import cv2

        c = self.config
        return cv2.ORB_create(nfeatures=c.top_k, scaleFactor=c.scale_factor, nlevels=c.n_levels,
                              edgeThreshold=c.edge_threshold, patchSize=c.patch_size,
                              fastThreshold=c.fast_threshold)

    def _fix_points(self, pts: np.ndarray, octave: np.ndarray) -> np.ndarray:
        # OpenCV scales pyramid-level points back with p * s; featmatch's convention (the one
        # matching the centre-aligned pyramid resize) is (p + 0.5) * s - 0.5.
        s = float(self.config.scale_factor) ** octave.astype(np.float64)
        return pts + 0.5 * (s - 1.0)[:, None]


class AKAZE(OpenCVExtractor):
    """OpenCV AKAZE: nonlinear-scale-space keypoints, 486-bit MLDB descriptors (uint8)."""

    descriptor_dim = 61
    descriptor_dtype = torch.uint8

    def __init__(self, config: AKAZEConfig = AKAZEConfig()):
        super().__init__(config)
        if akaze_factory() is None:
            raise ModelUnavailableError(AKAZE_MISSING)

    def _create(self) -> Any:
        c = self.config
        return akaze_factory()(threshold=c.threshold, nOctaves=c.n_octaves,
                               nOctaveLayers=c.n_octave_layers)


def akaze_factory() -> Optional[Callable[..., Any]]:
    """``cv2.AKAZE_create`` (OpenCV 4) or ``cv2.xfeatures2d.AKAZE_create`` (OpenCV 5 moved
    AKAZE to the contrib modules); ``None`` when this OpenCV build has neither."""
    import cv2

    if hasattr(cv2, "AKAZE_create"):
        return cv2.AKAZE_create
    xf = getattr(cv2, "xfeatures2d", None)
    return getattr(xf, "AKAZE_create", None) if xf is not None else None


AKAZE_MISSING = ("AKAZE is not in this OpenCV build (OpenCV 5 moved it to the contrib modules); "
                 "use opencv-python-headless<5 or opencv-contrib-python-headless")


_LICENCE_NOTE = "OpenCV (Apache-2.0) implementation; no learned weights."

register(
    "sift",
    card=ModelCard(name="sift", family="classical", kind="sparse",
                   summary="SIFT (OpenCV): DoG keypoints, 128-d descriptors, mutual NN + ratio 0.8",
                   paper="Lowe, Distinctive Image Features from Scale-Invariant Keypoints, IJCV 2004",
                   code_license="Apache-2.0", weights=None, weights_origin="none",
                   input="RGB or grey float [0, 1]; converted to 8-bit grey",
                   notes=_LICENCE_NOTE + " The SIFT patent (US 6,711,293) expired in March 2020."),
    config_cls=SIFTConfig, build=SIFT,
)
register(
    "orb",
    card=ModelCard(name="orb", family="classical", kind="sparse",
                   summary="ORB (OpenCV): oriented FAST + rBRIEF (256 bit), mutual NN in Hamming distance",
                   paper="Rublee et al., ORB: an efficient alternative to SIFT or SURF, ICCV 2011",
                   code_license="Apache-2.0", weights=None, weights_origin="none",
                   input="RGB or grey float [0, 1]; converted to 8-bit grey",
                   notes=_LICENCE_NOTE),
    config_cls=ORBConfig, build=ORB,
)
# OpenCV 5 ships AKAZE only in opencv-contrib; register it where it works, so that
# list_models() (and every test parametrised over it) holds usable models only.
if akaze_factory() is not None:
    register(
        "akaze",
        card=ModelCard(name="akaze", family="classical", kind="sparse",
                       summary="AKAZE (OpenCV): nonlinear scale space, MLDB binary descriptor, mutual NN in Hamming distance",
                       paper="Alcantarilla et al., Fast Explicit Diffusion for Accelerated Features in Nonlinear Scale Spaces, BMVC 2013",
                       code_license="Apache-2.0", weights=None, weights_origin="none",
                       input="RGB or grey float [0, 1]; converted to 8-bit grey",
                       notes=_LICENCE_NOTE),
        config_cls=AKAZEConfig, build=AKAZE,
    )

__all__ = ["SIFT", "ORB", "AKAZE", "SIFTConfig", "ORBConfig", "AKAZEConfig"]
