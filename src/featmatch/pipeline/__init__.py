"""From a folder of photos to a COLMAP reconstruction (hloc-style, resumable, local or Ray).

>>> from featmatch import pipeline
>>> pipeline.extract("photos/", "out/features.h5", model="aliked.n16")
>>> pairs = pipeline.pairs.exhaustive(pipeline.list_images("photos/")[0])
>>> pipeline.match("out/features.h5", pairs, "out/matches.h5")
>>> pipeline.match("out/features.h5", pairs, "out/lg.h5", matcher="lightglue")  # LightGlue
>>> rec = pipeline.reconstruct("photos/", "out/", model="aliked.n16")
>>> rec.summary["registered_images"]

Modules: :mod:`.store` (HDF5 layouts, shards), :mod:`.extraction`, :mod:`.pairs`,
:mod:`.match`, :mod:`.colmap` (pycolmap export and mapping), :mod:`.engines` (local / Ray)
and :mod:`.reconstruction`. h5py, pycolmap and Ray are imported only when used
(``pip install 'featmatch[sfm]'``, ``'featmatch[ray]'``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence, Union

from . import pairs
from .extraction import ExtractResult, extract, list_images
from .reconstruction import Reconstruction, reconstruct


def match(features: Union[str, os.PathLike], pairs_or_file: Union[str, os.PathLike, Sequence[tuple[str, str]]],
          out: Union[str, os.PathLike], **kwargs: Any) -> Path:
    """Match stored sparse features for a list of pairs (or a ``pairs.txt``) into ``out``
    (hloc ``matches0`` layout) with the features' model's matcher (MNN, or LightGlue for
    ``aliked.n16+lightglue``; ``matcher="lightglue"`` picks it for ``aliked.n16`` features);
    see :func:`featmatch.pipeline.matching.match_features`."""
    from .matching import match_features

    pl = pairs.read_pairs(pairs_or_file) if isinstance(pairs_or_file, (str, os.PathLike)) else list(pairs_or_file)
    return match_features(features, pl, out, **kwargs)


def match_dense(images: Union[str, os.PathLike], pairs_or_file: Any, out: Union[str, os.PathLike],
                features_out: Union[str, os.PathLike], model: str, **kwargs: Any) -> tuple[Path, Path]:
    """Match image pairs with a dense model and merge keypoints per image; see
    :func:`featmatch.pipeline.matching.match_dense`."""
    from .matching import match_dense as _md

    pl = pairs.read_pairs(pairs_or_file) if isinstance(pairs_or_file, (str, os.PathLike)) else list(pairs_or_file)
    return _md(images, pl, out, features_out, model, **kwargs)


__all__ = ["extract", "match", "match_dense", "reconstruct", "pairs", "list_images", "ExtractResult", "Reconstruction"]
