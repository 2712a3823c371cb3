"""Core result types and the coordinate convention.

Coordinate convention (every public API): keypoints are ``(x, y)`` pixels of the image
*as the caller gave it*, x to the right, y down, the centre of the top-left pixel at
``(0, 0)``. An image resized by a factor ``s`` (new = old * s) maps a point ``p`` of the
resized image back with ``(p + 0.5) / s - 0.5``. ``image_size`` is ``(W, H)``.

``Features`` and ``Matches`` hold either one image / pair (unbatched: ``keypoints (N, 2)``)
or a padded batch (``keypoints (B, N, 2)`` plus a boolean ``mask (B, N)``, True = valid).
Index a batched object with ``[b]`` to get the valid entries of item ``b``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

import numpy as np
import torch

from .errors import UsageError


def check_shape(name: str, t: Any, shape: tuple, *, dims: Optional[tuple] = None) -> None:
    """Raise a clear error unless ``t.shape`` fits ``shape`` (-1 or None = any size).

    Args:
        name: argument name used in the message.
        t: tensor or array.
        shape: expected shape, e.g. ``(-1, 2)``; a leading ``...`` allows batch dims.
    """
    if not hasattr(t, "shape"):
        raise UsageError(f"{name} must be a tensor or array, got {type(t).__name__}")
    got = tuple(t.shape)
    exp = tuple(shape)
    if exp and exp[0] is Ellipsis:
        exp = exp[1:]
        if len(got) < len(exp):
            raise UsageError(f"{name} has shape {got}, expected (..., {', '.join(map(str, exp))})")
        got = got[len(got) - len(exp):]
    if len(got) != len(exp) or any(e not in (-1, None) and g != e for g, e in zip(got, exp)):
        pretty = ", ".join("*" if e in (-1, None) else str(e) for e in shape if e is not Ellipsis)
        raise UsageError(f"{name} has shape {tuple(t.shape)}, expected ({pretty})")


def _map_tensors(obj: Any, fn) -> Any:
    changes = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if isinstance(v, torch.Tensor):
            changes[f.name] = fn(v)
    return dataclasses.replace(obj, **changes)


class _TensorRecord:
    """Shared helpers for the tensor dataclasses below."""

    _per_item: tuple = ()  # fields indexed by keypoint / match (same leading dims as mask)

    def to(self, device: Any = None, dtype: Optional[torch.dtype] = None):
        """Move every tensor field to ``device`` (floating fields also to ``dtype``)."""
        def mv(t: torch.Tensor) -> torch.Tensor:
            if dtype is not None and t.is_floating_point():
                return t.to(device=device, dtype=dtype)
            return t.to(device)
        return _map_tensors(self, mv)

    def cpu(self):
        return self.to("cpu")

    def detach(self):
        return _map_tensors(self, lambda t: t.detach())

    def numpy(self) -> dict[str, Any]:
        """Dict of numpy arrays (and plain values) for saving."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is None:
                continue
            out[f.name] = v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v
        return out

    @property
    def is_batched(self) -> bool:
        return getattr(self, self._per_item[0]).dim() == 3

    def __len__(self) -> int:
        first = getattr(self, self._per_item[0])
        if first.dim() == 3:
            raise TypeError("len() of a batched object is ambiguous; use .batch_size or index it")
        return int(first.shape[0])

    @property
    def batch_size(self) -> int:
        return int(getattr(self, self._per_item[0]).shape[0]) if self.is_batched else 1

    def __getitem__(self, b: int):
        """Item ``b`` of a batched object, keeping only its valid (mask) entries."""
        if not self.is_batched:
            raise TypeError("object is not batched; index its tensors directly")
        mask = self.mask[b] if self.mask is not None else None
        changes: dict[str, Any] = {"mask": None}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "mask" or not isinstance(v, torch.Tensor):
                continue
            item = v[b]
            if f.name in self._per_item and mask is not None:
                item = item[mask]
            changes[f.name] = item
        return self._item_replace(b, changes)

    def _item_replace(self, b: int, changes: dict):
        return dataclasses.replace(self, **changes)

    def __iter__(self) -> Iterator:
        if not self.is_batched:
            raise TypeError("iterate over a batched object only")
        return (self[b] for b in range(self.batch_size))


@dataclass(frozen=True)
class Features(_TensorRecord):
    """Local features of one image, or of a padded batch of images.

    Shape:
        keypoints: ``(N, 2)`` or ``(B, N, 2)``, float ``(x, y)`` pixels (see module doc).
        keypoint_scores: ``(N,)`` or ``(B, N)``, higher is better.
        descriptors: ``(N, D)`` or ``(B, N, D)``; float descriptors are L2-normalised,
            binary ones (ORB, AKAZE) are ``uint8`` bytes.
        image_size: ``(W, H)`` of the image in the caller's pixels; for a batch a
            ``(B, 2)`` tensor.
        mask: ``None`` (unbatched) or ``(B, N)`` bool, True = valid.
        scales / orientations: optional ``(N,)`` / ``(B, N)`` (orientation in radians).
        extractor: optional name of the registered model that made them (``"aliked.n16"``),
            set by ``extract()``; learned matchers check it against their weights.
    """

    keypoints: torch.Tensor
    keypoint_scores: torch.Tensor
    descriptors: torch.Tensor
    image_size: Any
    mask: Optional[torch.Tensor] = None
    scales: Optional[torch.Tensor] = None
    orientations: Optional[torch.Tensor] = None
    extractor: Optional[str] = None

    _per_item = ("keypoints", "keypoint_scores", "descriptors", "scales", "orientations")

    def __post_init__(self) -> None:
        check_shape("keypoints", self.keypoints, (..., -1, 2))
        lead = tuple(self.keypoints.shape[:-1])
        if tuple(self.keypoint_scores.shape) != lead:
            raise UsageError(f"keypoint_scores has shape {tuple(self.keypoint_scores.shape)}, expected {lead}")
        if tuple(self.descriptors.shape[:-1]) != lead:
            raise UsageError(f"descriptors has shape {tuple(self.descriptors.shape)}, expected {lead + ('D',)}")
        if self.mask is not None and tuple(self.mask.shape) != lead:
            raise UsageError(f"mask has shape {tuple(self.mask.shape)}, expected {lead}")

    def _item_replace(self, b: int, changes: dict):
        size = self.image_size
        if isinstance(size, torch.Tensor) and size.dim() == 2:
            changes["image_size"] = tuple(int(v) for v in size[b].tolist())
        return dataclasses.replace(self, **changes)

    @property
    def num_keypoints(self) -> int:
        return len(self)

    @staticmethod
    def stack(items: list["Features"]) -> "Features":
        """Pad unbatched features into one batch with a mask."""
        if not items:
            raise UsageError("Features.stack needs at least one item")
        n = max(len(f) for f in items)
        b = len(items)
        f0 = items[0]
        dev = f0.keypoints.device
        kp = torch.zeros(b, n, 2, device=dev, dtype=f0.keypoints.dtype)
        sc = torch.zeros(b, n, device=dev, dtype=f0.keypoint_scores.dtype)
        de = torch.zeros(b, n, f0.descriptors.shape[-1], device=dev, dtype=f0.descriptors.dtype)
        mask = torch.zeros(b, n, dtype=torch.bool, device=dev)
        opt = {}
        for name in ("scales", "orientations"):
            if all(getattr(f, name) is not None for f in items):
                opt[name] = torch.zeros(b, n, device=dev, dtype=getattr(f0, name).dtype)
        for i, f in enumerate(items):
            k = len(f)
            kp[i, :k] = f.keypoints
            sc[i, :k] = f.keypoint_scores
            de[i, :k] = f.descriptors
            mask[i, :k] = True
            for name, t in opt.items():
                t[i, :k] = getattr(f, name)
        sizes = torch.tensor([list(f.image_size) for f in items], dtype=torch.long)
        names = {f.extractor for f in items}
        return Features(kp, sc, de, sizes, mask, **opt, extractor=names.pop() if len(names) == 1 else None)


@dataclass(frozen=True)
class Matches(_TensorRecord):
    """Correspondences between two images (sparse or dense matchers alike).

    Shape:
        points0, points1: ``(K, 2)`` (or ``(B, K, 2)``) float ``(x, y)`` pixels in the
            caller's images 0 and 1.
        scores: ``(K,)`` (or ``(B, K)``) match confidence in [0, 1] where the method has
            one (cosine similarity for MNN).
        indices0, indices1: optional ``(K,)`` long indices into the features of a sparse
            matcher (``features0.keypoints[indices0] == points0``).
        mask: ``None`` or ``(B, K)`` bool for a padded batch.
    """

    points0: torch.Tensor
    points1: torch.Tensor
    scores: torch.Tensor
    indices0: Optional[torch.Tensor] = None
    indices1: Optional[torch.Tensor] = None
    mask: Optional[torch.Tensor] = None
    features0: Optional[Features] = field(default=None, compare=False, repr=False)
    features1: Optional[Features] = field(default=None, compare=False, repr=False)

    _per_item = ("points0", "points1", "scores", "indices0", "indices1")

    def __post_init__(self) -> None:
        check_shape("points0", self.points0, (..., -1, 2))
        if tuple(self.points1.shape) != tuple(self.points0.shape):
            raise UsageError(f"points1 has shape {tuple(self.points1.shape)}, expected {tuple(self.points0.shape)}")
        if tuple(self.scores.shape) != tuple(self.points0.shape[:-1]):
            raise UsageError(f"scores has shape {tuple(self.scores.shape)}, expected {tuple(self.points0.shape[:-1])}")

    @property
    def num_matches(self) -> int:
        return len(self)

    def numpy(self) -> dict[str, Any]:
        out = super().numpy()
        out.pop("features0", None)
        out.pop("features1", None)
        return out

    @staticmethod
    def empty(device: Any = "cpu", with_indices: bool = False) -> "Matches":
        z = torch.zeros(0, 2, device=device)
        idx = torch.zeros(0, dtype=torch.long, device=device) if with_indices else None
        return Matches(z, z.clone(), torch.zeros(0, device=device), idx, None if idx is None else idx.clone())


@dataclass(frozen=True)
class Estimate:
    """A robustly estimated two-view model and its inliers.

    Shape:
        model: ``(3, 3)`` homography / fundamental / essential matrix, float64 numpy;
            ``None`` when estimation failed (too few matches or no consensus).
        inliers: ``(K,)`` bool numpy over the matches given to the estimator.
        R, t: for relative pose, ``(3, 3)`` rotation and ``(3,)`` unit translation
            mapping camera-0 to camera-1 coordinates.
    """

    kind: str
    model: Optional[np.ndarray]
    inliers: np.ndarray
    R: Optional[np.ndarray] = None
    t: Optional[np.ndarray] = None
    info: dict = field(default_factory=dict)

    @property
    def num_inliers(self) -> int:
        return int(np.count_nonzero(self.inliers))

    @property
    def success(self) -> bool:
        return self.model is not None
