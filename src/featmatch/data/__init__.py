"""Training and evaluation data: image folders, synthetic homography pairs, depth+pose pairs."""

from .depth_pairs import DepthPairs
from .split import read_split, split_files, write_split
from .synthetic import SyntheticConfig, SyntheticPairs, appearance_preset, list_images, photometric, random_homography, worker_init

__all__ = ["SyntheticConfig", "SyntheticPairs", "DepthPairs", "list_images", "random_homography", "photometric",
           "worker_init", "appearance_preset", "split_files", "write_split", "read_split"]
