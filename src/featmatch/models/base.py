"""Base classes shared by every model: the front doors ``extract`` and ``match``.

* :class:`Extractor` (sparse methods: XFeat, ALIKED, SIFT, ...) turns images into
  :class:`~featmatch.types.Features` and matches them with its configured matcher.
* :class:`DenseMatcher` (XFeat*, LoFTR, DRC-Net) turns an image pair into
  :class:`~featmatch.types.Matches` directly.

Both accept anything :func:`featmatch.image.to_tensor` accepts, resize as configured
(``resize``: long side; ``max_pixels``: downscale huge images with a warning) and return
points in the caller's pixels. Subclasses implement ``_extract`` / ``_match`` on
``(B, C, H, W)`` float tensors and return points in that tensor's pixels.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Optional

import torch
from torch import nn

from ..errors import UsageError, WeightsError
from ..image import ImageLike, fit_size, resize_image, scale_points, to_tensor
from ..types import Features, Matches

log = logging.getLogger(__name__)


def _remap_error(missing, unexpected, source: str) -> WeightsError:
    parts = []
    if missing:
        parts.append(f"missing keys {list(missing)[:3]}{'...' if len(missing) > 3 else ''}")
    if unexpected:
        parts.append(f"unexpected keys {list(unexpected)[:3]}{'...' if len(unexpected) > 3 else ''}")
    return WeightsError(f"weights {source} do not fit this model: {'; '.join(parts)}")


class Model(nn.Module):
    """Common base: config, card, device handling and strict weight loading."""

    card: Any = None
    weights_path: Optional[str] = None
    #: images smaller than this (either side, before or after resizing) give an empty result
    #: with a warning naming the image, its size and this limit
    min_image_side: int = 1

    def __init__(self, config: Any):
        super().__init__()
        check_common_options(config, type(self).min_image_side)
        self.config = config
        self._resize_cap_warned = False  # see _prepare: the resize-overshoots-max_pixels warning is said once

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the parameters (float32 unless the model was converted)."""
        for p in self.parameters():
            if p.is_floating_point():
                return p.dtype
        return torch.float32

    def remap_state_dict(self, state: dict) -> dict:
        """Rename official checkpoint keys to this module's names (identity by default)."""
        return state

    @staticmethod
    def under(prefix: str, state: dict) -> dict:
        """``state`` with every key under ``prefix`` (e.g. ``"net."``) unless one already is:
        bare network state dicts (a training run's ``model.pt``) load into wrappers."""
        if any(k.startswith(prefix) for k in state):
            return state
        return {prefix + k: v for k, v in state.items()}

    def load_weights(self, state: dict, source: str = "state dict") -> None:
        """Remap then load strictly; raise a one-line :class:`WeightsError` on mismatch."""
        state = self.remap_state_dict(dict(state))
        # sub-models (a learned matcher such as LightGlue) load their own weight file
        separate = tuple(f"{n}." for n, m in self.named_children() if isinstance(m, Model))
        own = {k: v for k, v in self.state_dict().items() if not k.startswith(separate)} if separate \
            else self.state_dict()
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if missing or unexpected:
            raise _remap_error(missing, unexpected, source)
        for k, v in state.items():
            if tuple(v.shape) != tuple(own[k].shape):
                raise WeightsError(f"weights {source}: '{k}' has shape {tuple(v.shape)}, model expects {tuple(own[k].shape)}")
        if not separate:
            self.load_state_dict(state, strict=True)
            return
        res = self.load_state_dict(state, strict=False)  # key sets checked exactly above
        assert not res.unexpected_keys and all(k.startswith(separate) for k in res.missing_keys)

    # -- input handling -------------------------------------------------------------
    def _prepare(self, image: ImageLike, name: str) -> tuple[torch.Tensor, tuple[float, float], tuple[int, int],
                                                             torch.Tensor]:
        """Tensor on the model's device, resized per config; returns the tensor, the
        ``(sx, sy)`` factors back to the caller's pixels, the original ``(W, H)`` and the
        tensor before resizing."""
        x = to_tensor(image, name=name, device=self.device)
        if x.dtype != self.dtype:  # e.g. a model converted with .double() for precision checks
            x = x.to(self.dtype)
        original = x
        h, w = x.shape[-2:]
        long_side = getattr(self.config, "resize", None)
        max_pixels = getattr(self.config, "max_pixels", None)
        th, tw = fit_size(h, w, long_side=long_side, max_pixels=None)
        if max_pixels and th * tw > max_pixels:
            size = f"{w}x{h} image" if (th, tw) == (h, w) else f"{w}x{h} image resized to {tw}x{th}"
            th, tw = fit_size(th, tw, max_pixels=max_pixels)
            # a huge image is named every time; the model's own resize overshooting the cap
            # (e.g. resize=1024 on a 600x460 photo) is said once per model, then logged at debug
            level, once = logging.WARNING, ""
            if h * w <= max_pixels:
                level = logging.DEBUG if self._resize_cap_warned else logging.WARNING
                once = "; said once per model for resized images"
                self._resize_cap_warned = True
            log.log(level, "%s: %s has more than %d pixels; downscaled to %dx%d (set max_pixels to change this%s)",
                    name, size, max_pixels, tw, th, once)
        if (th, tw) != (h, w):
            x = resize_image(x, (th, tw), antialias=th < h)
        return x, (w / tw, h / th), (int(w), int(h)), original

    def _too_small(self, x: torch.Tensor) -> bool:
        return min(x.shape[-2:]) < self.min_image_side

    @property
    def _label(self) -> str:
        """The registered name (``loftr.tiny``) when loaded from the registry, else the class."""
        return getattr(self.card, "name", None) or type(self).__name__

    def _warn_too_small(self, name: str, size_wh: tuple[int, int], x: torch.Tensor, what: str) -> None:
        """One warning, the same for every model: the caller's size, the size after resizing."""
        h, w = x.shape[-2:]
        resized = "" if (w, h) == tuple(size_wh) else f" (resized to {w}x{h})"
        log.warning("%s: %dx%d px image%s is too small for %s (minimum side %d px); %s",
                    name, size_wh[0], size_wh[1], resized, self._label, self.min_image_side, what)


class Extractor(Model):
    """Sparse local features: ``extract(image) -> Features``; ``match`` via a matcher."""

    # ``self.matcher``: set by subclasses (a plain callable, or an nn.Module such as
    # LightGlue, which is why there is no class-level default that would shadow it)

    def _extract(self, x: torch.Tensor) -> Features:
        """Shape: x ``(B, C, H, W)`` -> batched Features in x's pixels."""
        raise NotImplementedError

    def _empty_features(self, b: int, size_wh: tuple[int, int]) -> Features:
        dim = getattr(self, "descriptor_dim", 0)
        dev = self.device
        return Features(torch.zeros(b, 0, 2, device=dev), torch.zeros(b, 0, device=dev),
                        torch.zeros(b, 0, dim, device=dev), torch.tensor([list(size_wh)] * b),
                        torch.zeros(b, 0, dtype=torch.bool, device=dev))

    @torch.inference_mode()
    def extract(self, image: ImageLike, *, name: str = "image") -> Features:
        """Detect and describe keypoints.

        Args:
            image: path, numpy ``(H, W[, 3])`` (RGB, not OpenCV's BGR) or tensor
                ``([B, C,] H, W)``.
            name: how warnings and errors name the image (``match`` uses image0/image1).

        Returns:
            :class:`Features` in the caller's pixels; unbatched for a single image, padded
            with a mask for a batch (``B > 1``).
        """
        x, scale, size, original = self._prepare(image, name)
        b = x.shape[0]
        if self._too_small(x) or self._too_small(original):  # also when resize would enlarge it
            self._warn_too_small(name, size, x, "no keypoints")
            feats = self._empty_features(b, size)
        else:
            feats = self._extract(x)
            kp = scale_points(feats.keypoints, scale) if scale != (1.0, 1.0) else feats.keypoints
            extra = {}
            if feats.scales is not None and scale != (1.0, 1.0):
                extra["scales"] = feats.scales * (scale[0] * scale[1]) ** 0.5
            feats = Features(kp, feats.keypoint_scores, feats.descriptors,
                             torch.tensor([list(size)] * b), feats.mask,
                             extra.get("scales", feats.scales), feats.orientations)
        if self.card is not None:  # lets a learned matcher refuse features of another extractor
            feats = dataclasses.replace(feats, extractor=self.card.name.split("+")[0])
        return feats[0] if b == 1 else feats

    def match_features(self, features0: Features, features1: Features) -> Matches:
        """Match two unbatched :class:`Features` with this model's matcher (learned matchers
        such as LightGlue also take padded batches and return a list of Matches)."""
        if getattr(self, "matcher", None) is None:
            raise UsageError(f"{type(self).__name__} has no matcher configured")
        return self.matcher(features0, features1)

    def match(self, image0: ImageLike, image1: ImageLike) -> Matches:
        """Extract features from both images and match them.

        Returns:
            :class:`Matches` with ``points0/points1 (K, 2)``, ``scores (K,)``,
            ``indices0/indices1`` into the features, which are attached as
            ``features0/features1``.
        """
        f0 = self.extract(image0, name="image0")
        f1 = self.extract(image1, name="image1")
        if f0.is_batched or f1.is_batched:
            raise UsageError("match() takes one image per side; loop over a batch or use extract() + match_features()")
        return self.match_features(f0, f1)


def is_int(v: Any) -> bool:
    """An integer option value (``bool`` excluded)."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    """A finite real option value (``bool`` excluded)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


#: smallest ``resize`` (long side in pixels) any model accepts; smaller gives no features
MIN_RESIZE = 32


def check_common_options(config: Any, min_image_side: int = 1) -> None:
    """Validate the ranges of the options several models share, where ``config`` has them:
    ``resize``, ``max_pixels``, ``top_k``, ``detection_threshold`` and the matcher's
    thresholds. Types are checked first (:func:`featmatch.config.check_types`, driven by
    the dataclass field types). Called by :class:`Model` for every model, so a wrong value
    fails at ``load()`` with one line instead of deep inside inference (or silently).

    ``top_k = -1`` (no limit) is accepted where the config class says so with a
    ``top_k_unlimited = -1`` class variable (ALIKED)."""
    from ..config import check_types

    check_types(config)
    r = getattr(config, "resize", None)
    floor = max(MIN_RESIZE, min_image_side)
    if r is not None and not (is_int(r) and r >= floor):
        raise UsageError(f"resize must be an integer >= {floor} (long side in pixels) or None, got {r!r}")
    if hasattr(config, "max_pixels") and not (is_int(config.max_pixels) and config.max_pixels >= MIN_RESIZE ** 2):
        raise UsageError(f"max_pixels must be an integer >= {MIN_RESIZE ** 2} (32x32), got {config.max_pixels!r}")
    if hasattr(config, "top_k"):
        k = config.top_k
        unlimited = getattr(type(config), "top_k_unlimited", None)
        if not is_int(k) or (k < 1 and k != unlimited):
            extra = f" (or {unlimited}: no limit)" if unlimited is not None else ""
            raise UsageError(f"top_k must be an integer >= 1{extra}, got {k!r}")
    if hasattr(config, "detection_threshold"):
        t = config.detection_threshold
        # a config whose scores are signed (LIFT's detector) sets the class attribute
        # ``detection_threshold_signed = True``: any number is then a threshold
        if getattr(type(config), "detection_threshold_signed", False):
            if not is_number(t):
                raise UsageError(f"detection_threshold must be a number, got {t!r}")
        elif not (is_number(t) and t >= 0):
            raise UsageError(f"detection_threshold must be a number >= 0 (0 keeps every local maximum), got {t!r}")
    m = getattr(config, "matcher", None)
    for key in ("min_score", "max_distance", "ratio"):
        v = getattr(m, key, None)
        if v is not None and not is_number(v):
            raise UsageError(f"matcher.{key} must be a number or None, got {v!r}")
    ms, md, ra = (getattr(m, k, None) for k in ("min_score", "max_distance", "ratio"))
    if ms is not None and not -1.0 <= ms <= 1.0:
        raise UsageError(f"matcher.min_score is a cosine similarity in [-1, 1] (or None), got {ms!r}")
    if md is not None and md < 0:
        raise UsageError(f"matcher.max_distance must be >= 0 (or None), got {md!r}")
    if ra is not None and not 0.0 < ra <= 1.0:
        raise UsageError(f"matcher.ratio (Lowe's ratio test) must be in (0, 1] (or None), got {ra!r}")


SUBPIXEL_MODES = ("lk", "none")


def check_subpixel(config: Any) -> None:
    """Validate the ``subpixel`` / ``lk_radius`` / ``lk_max_move`` options of a dense config."""
    if config.subpixel not in SUBPIXEL_MODES:
        raise UsageError(f"subpixel must be 'lk' or 'none'; got '{config.subpixel}'")
    if not (is_int(config.lk_radius) and config.lk_radius >= 1):
        raise UsageError(f"lk_radius must be an integer >= 1, got {config.lk_radius!r}")
    if not config.lk_max_move > 0:
        raise UsageError(f"lk_max_move must be > 0, got {config.lk_max_move!r}")


class DenseMatcher(Model):
    """Detector-free / semi-dense matchers: ``match(image0, image1) -> Matches``.

    Optional final sub-pixel step (configs with ``subpixel="lk"``): the points of the side
    the model refines (``refined_side``: 0 or 1) are moved by translation-only Lucas-Kanade
    on the grey images at the caller's resolution (:func:`featmatch.ops.subpixel.refine_translation`;
    a move is kept only if the patch correlation improves).
    """

    #: which image's points the model refines (and the sub-pixel step moves)
    refined_side: int = 1

    def _subpixel_options(self) -> Optional[dict]:
        c = self.config
        if getattr(c, "subpixel", "none") != "lk" or getattr(c, "official_compat", False):
            return None
        return {"radius": c.lk_radius, "max_move": c.lk_max_move}

    def _refine_subpixel(self, m: Matches, img0: torch.Tensor, img1: torch.Tensor, opts: dict) -> Matches:
        """Shape: img0, img1 ``(C, H, W)`` at the caller's resolution; m in their pixels."""
        from ..image import to_grey
        from ..ops.subpixel import refine_translation

        g0, g1 = to_grey(img0[None])[0], to_grey(img1[None])[0]
        if self.refined_side == 0:
            p0, _ = refine_translation(g1, g0, m.points1, m.points0, **opts)
            return Matches(p0, m.points1, m.scores, m.indices0, m.indices1)
        p1, _ = refine_translation(g0, g1, m.points0, m.points1, **opts)
        return Matches(m.points0, p1, m.scores, m.indices0, m.indices1)

    def _match(self, x0: torch.Tensor, x1: torch.Tensor) -> list[Matches]:
        """Shape: x0, x1 ``(B, C, H, W)``; returns B unbatched Matches in their pixels."""
        raise NotImplementedError

    def extract(self, image: ImageLike, **kwargs: Any) -> Features:
        """Dense matchers have no per-image features: one line saying what to use instead."""
        raise UsageError(f"{self._label} is a dense matcher and has no extract(): match image pairs with "
                         f"model.match(image0, image1) or featmatch.match_pair(...), or a collection with the "
                         f"pipeline (featmatch pairs / match); for keypoints use a sparse model (featmatch list)")

    @torch.inference_mode()
    def match(self, image0: ImageLike, image1: ImageLike):
        """Match an image pair (or a batch of pairs).

        Returns:
            :class:`Matches` in the caller's pixels (a list of them for ``B > 1``).
        """
        x0, s0, size0, orig0 = self._prepare(image0, "image0")
        x1, s1, size1, orig1 = self._prepare(image1, "image1")
        if x0.shape[0] != x1.shape[0]:
            raise UsageError(f"image0 and image1 batches differ: {x0.shape[0]} vs {x1.shape[0]}")
        small = [(n, size, x) for n, size, x, o in (("image0", size0, x0, orig0), ("image1", size1, x1, orig1))
                 if self._too_small(x) or self._too_small(o)]
        if small:
            for n, size, x in small:
                self._warn_too_small(n, size, x, "no matches")
            out = [Matches.empty(self.device) for _ in range(x0.shape[0])]
        else:
            out = self._match(x0, x1)
        res = []
        lk = self._subpixel_options()
        for b, m in enumerate(out):
            p0 = scale_points(m.points0, s0) if s0 != (1.0, 1.0) else m.points0
            p1 = scale_points(m.points1, s1) if s1 != (1.0, 1.0) else m.points1
            m = Matches(p0, p1, m.scores, m.indices0, m.indices1)
            if lk is not None and len(m):
                m = self._refine_subpixel(m, orig0[b], orig1[b], lk)
            res.append(m)
        return res[0] if len(res) == 1 else res
