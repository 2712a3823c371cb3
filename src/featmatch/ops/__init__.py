"""Shared tensor kernels used by several models."""

from .mnn import mutual_nn, mutual_nn_batched
from .nms import nms_points, simple_nms
from .sampling import normalize_grid, sample_at

__all__ = ["mutual_nn", "mutual_nn_batched", "nms_points", "simple_nms", "normalize_grid", "sample_at"]
