"""Training and evaluation data: image folders, synthetic homography pairs, depth+pose pairs."""

from .depth_pairs import DepthPairs
from .synthetic import SyntheticConfig, SyntheticPairs, list_images, random_homography

__all__ = ["SyntheticConfig", "SyntheticPairs", "DepthPairs", "list_images", "random_homography"]
