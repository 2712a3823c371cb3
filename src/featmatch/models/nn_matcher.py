"""MutualNN: the nearest-neighbour matcher used by the sparse extractors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ..errors import UsageError
from ..ops.mnn import mutual_nn_batched
from ..types import Features, Matches


@dataclass(frozen=True)
class MNNConfig:
    """Nearest-neighbour matching options."""

    metric: str = "cosine"  # cosine | l2 | hamming (uint8 binary descriptors)
    mutual: bool = True  # keep only mutual nearest neighbours
    min_score: Optional[float] = None  # cosine similarity threshold (XFeat's min_cossim, e.g. 0.82)
    max_distance: Optional[float] = None  # distance threshold for l2 / hamming
    ratio: Optional[float] = None  # Lowe ratio test on distances (e.g. 0.8), both directions


class MutualNN:
    """Match two :class:`Features` by (mutual) nearest neighbour of their descriptors.

    Match scores: cosine similarity (``cosine``), ``1 - hamming / bits`` for ``uint8``
    binary descriptors (in [0, 1]), negative distance for ``l2``.
    """

    def __init__(self, config: MNNConfig = MNNConfig()):
        if config.metric not in ("cosine", "l2", "hamming"):
            raise UsageError(f"unknown matching metric '{config.metric}'; use cosine, l2 or hamming")
        self.config = config

    def __call__(self, f0: Features, f1: Features) -> Matches:
        """Shape: unbatched features ``(N, D)``/``(M, D)`` -> Matches with K pairs."""
        if f0.is_batched or f1.is_batched:
            raise UsageError("MutualNN takes unbatched Features; index a batch with [b]")
        c = self.config
        m0, s0 = mutual_nn_batched(f0.descriptors[None], f1.descriptors[None], metric=c.metric,
                                   min_score=c.min_score, max_distance=c.max_distance,
                                   ratio=c.ratio, mutual=c.mutual)
        idx0 = (m0[0] >= 0).nonzero()[:, 0]
        idx1 = m0[0, idx0]
        scores = s0[0, idx0]
        if f0.descriptors.dtype == torch.uint8:  # -hamming -> 1 - hamming / bits, in [0, 1]
            scores = (1.0 + scores / (8 * f0.descriptors.shape[-1])).clamp(0.0, 1.0)
        elif c.metric == "cosine":  # unit vectors; rounding can exceed 1
            scores = scores.clamp(-1.0, 1.0)
        return Matches(f0.keypoints[idx0], f1.keypoints[idx1], scores, idx0, idx1,
                       features0=f0, features1=f1)


def match_batched(f0: Features, f1: Features, config: MNNConfig = MNNConfig()) -> torch.Tensor:
    """Batched MNN on padded features; returns ``matches0 (B, N)`` (-1 = unmatched)."""
    m0, _ = mutual_nn_batched(f0.descriptors, f1.descriptors, mask0=f0.mask, mask1=f1.mask,
                              metric=config.metric, min_score=config.min_score,
                              max_distance=config.max_distance, ratio=config.ratio,
                              mutual=config.mutual)
    return m0
