"""Two-view geometry helpers: ground-truth correspondences from homographies or depth."""

from .warp import warp_points_depth, warp_points_homography

__all__ = ["warp_points_homography", "warp_points_depth"]
