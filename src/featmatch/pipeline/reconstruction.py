"""The whole chain: a folder of photos to a COLMAP model.

``OUT/`` receives ``features.h5``, ``pairs.txt``, ``matches.h5``, ``database.db``, the
largest model as ``cameras.bin`` / ``images.bin`` / ``points3D.bin`` (all models under
``models/<i>/``), ``summary.json`` and ``topview.png``. Extraction and matching resume
where a killed run stopped; the database and the mapping are redone on every run.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from ..errors import FeatmatchError, UsageError
from . import colmap, pairs as pairs_mod

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

PAIR_MODES = ("auto", "exhaustive", "sequential", "retrieval", "from-list")


@dataclass(frozen=True)
class Reconstruction:
    """Result of :func:`reconstruct`: the output folder, the summary dict and the largest
    ``pycolmap.Reconstruction``."""

    out: Path
    summary: dict
    model: Any = field(repr=False)


def _save_summary(out: Path, summary: dict) -> None:
    from ..io import atomic_path

    with atomic_path(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2, sort_keys=True, default=str))


def _init_failure(db: Path, min_inliers: int, n_images: int) -> str:
    vp = colmap.verified_pairs(db)
    need = f"the mapper needs a pair with >= {min_inliers} verified inliers (mapper.init_min_num_inliers)"
    if not vp:
        return (f"reconstruction failed to initialise: no image pair survived geometric verification among "
                f"{n_images} images; {need}. The images may not overlap; try another model, more keypoints "
                "or more overlapping photos")
    a, b, c = vp[0]
    return (f"reconstruction failed to initialise: the best verified pair {a} - {b} has {c} inliers "
            f"({len(vp)} verified pairs); {need} and enough baseline (mapper.init_min_tri_angle). Try more "
            "keypoints, another model, more overlapping photos or --mapper mapper.init_min_num_inliers=N")


def reconstruct(images: PathLike, out: PathLike, model: str = "xfeat", *, overrides: Optional[dict] = None,
                weights: Optional[str] = None, device: Optional[str] = None, pairs: str = "auto",
                window: int = 5, num: int = 20, pairs_file: Optional[PathLike] = None,
                camera_model: str = "SIMPLE_RADIAL", camera_params: Optional[Sequence[float]] = None,
                single_camera: bool = False, mapper: Optional[dict] = None, tolerance: float = 1.0,
                batch_size: int = 4, matcher_weights: Optional[str] = None, engine: str = "local",
                ray_address: Optional[str] = None, progress: bool = True, seed: int = 0) -> Reconstruction:
    """Extract, pair, match, verify and map a folder of photos with pycolmap.

    Args:
        images: folder of photos (recursive; names are relative paths).
        out: output folder.
        model: any featmatch model: sparse (extract, then match the stored features with
            the model's matcher: MNN, or LightGlue for ``aliked.n16+lightglue``) or dense
            (per pair, merged); ``overrides={"matcher": "lightglue"}`` picks a learned matcher.
        pairs: ``auto`` (exhaustive up to 40 images, else retrieval for sparse models /
            sequential for dense ones), ``exhaustive``, ``sequential`` (``window``),
            ``retrieval`` (``num`` per image) or ``from-list`` (``pairs_file``).
        camera_model, camera_params, single_camera: intrinsics (default: EXIF focal when
            present, else one shared default camera per image size).
        mapper: pycolmap ``IncrementalPipelineOptions`` overrides, e.g.
            ``{"mapper.init_min_num_inliers": 50}``.
        tolerance: dense models' keypoint merge cell in pixels.
        matcher_weights: a learned matcher's weight file instead of the cached official one.

    Raises:
        FeatmatchError: no usable image, or the mapper could not initialise (the message
            names the best pair and its inliers).
    """
    from ..registry import get_entry
    from .extraction import extract, list_images, resolve_model
    from .matching import is_learned, match_dense, match_features

    model, overrides = resolve_model(model, overrides)
    if matcher_weights is not None and not is_learned(model):
        raise UsageError(f"matcher_weights is for models with a learned matcher (e.g. aliked.n16+lightglue), "
                         f"not '{model}'")
    if pairs not in PAIR_MODES:
        raise UsageError(f"unknown pairs mode '{pairs}'; use one of {', '.join(PAIR_MODES)}")
    if pairs == "from-list" and pairs_file is None:
        raise UsageError("pairs mode 'from-list' needs a pairs file (--pairs-file)")
    kind = get_entry(model).card.kind
    pc = colmap.pycolmap()  # fail early when the sfm extra is missing, or on a misspelt mapper option
    colmap.set_options(pc.IncrementalPipelineOptions(), mapper or {})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    times: dict = {}
    all_names, not_images = list_images(images)
    feats_path, matches_path = out / "features.h5", out / "matches.h5"
    common = dict(engine=engine, ray_address=ray_address, progress=progress)

    t = time.perf_counter()
    skipped = dict(not_images)
    if kind == "sparse":
        res = extract(images, feats_path, model, overrides=overrides, weights=weights, device=device,
                      batch_size=batch_size, **common)
        skipped.update(res.skipped)
        names = [n for n in all_names if n not in res.skipped]
    else:
        from ..image import read_image

        names = []
        for n in all_names:  # dense models read images per pair: find unreadable ones first
            try:
                read_image(Path(images) / n)
                names.append(n)
            except FeatmatchError as e:
                skipped[n] = str(e)
    times["extract_s"] = time.perf_counter() - t
    if len(names) < 2:
        raise FeatmatchError(f"need at least 2 readable images in {images}, found {len(names)}"
                             + (f" (skipped: {', '.join(list(skipped)[:3])})" if skipped else ""))

    t = time.perf_counter()
    mode = pairs
    if mode == "auto":
        mode = "exhaustive" if len(names) <= 40 else ("retrieval" if kind == "sparse" else "sequential")
    if mode == "exhaustive":
        pair_list = pairs_mod.exhaustive(names)
    elif mode == "sequential":
        pair_list = pairs_mod.sequential(names, window)
    elif mode == "retrieval":
        if kind != "sparse":
            raise UsageError("retrieval pairs need a sparse model's descriptors; use --pairs exhaustive or sequential")
        pair_list = pairs_mod.retrieval(feats_path, num, names)
    else:
        pair_list = pairs_mod.from_list(pairs_file, names)
    pairs_path = pairs_mod.write_pairs(pair_list, out / "pairs.txt")
    times["pairs_s"] = time.perf_counter() - t

    t = time.perf_counter()
    if kind == "sparse":
        match_features(feats_path, pair_list, matches_path, matcher_weights=matcher_weights, device=device, **common)
    else:
        match_dense(images, pair_list, matches_path, feats_path, model, overrides=overrides, weights=weights,
                    device=device, tolerance=tolerance, **common)
    times["match_s"] = time.perf_counter() - t

    t = time.perf_counter()
    db = out / "database.db"
    colmap.write_database(db, images, feats_path, matches_path, pair_list, camera_model=camera_model,
                          camera_params=camera_params, single_camera=single_camera)
    times["database_s"] = time.perf_counter() - t
    t = time.perf_counter()
    colmap.verify(db, pairs_path)
    times["verification_s"] = time.perf_counter() - t

    t = time.perf_counter()
    models_dir = out / "models"
    if models_dir.exists():
        shutil.rmtree(models_dir)
    mapper_opts = dict(mapper or {})
    if len(names) == 2:  # COLMAP's defaults drop two-view tracks and small models: keep them for a pair
        mapper_opts.setdefault("triangulation.ignore_two_view_tracks", False)
        mapper_opts.setdefault("min_model_size", 2)
    recs = colmap.incremental_mapping(db, images, models_dir, options=mapper_opts, seed=seed)
    times["mapping_s"] = time.perf_counter() - t
    summary: dict = {"model": model, "images": len(all_names), "readable_images": len(names), "skipped": skipped, "pairs": len(pair_list),
                     "pairs_mode": mode, "verified_pairs": len(colmap.verified_pairs(db)), "engine": engine,
                     "time_s": {k: round(v, 3) for k, v in times.items()}}
    if not recs:
        min_inl = int(mapper_opts.get("mapper.init_min_num_inliers", 100))
        summary["error"] = _init_failure(db, min_inl, len(names))
        _save_summary(out, summary)
        raise FeatmatchError(summary["error"])
    best = max(recs.values(), key=lambda r: (r.num_reg_images(), r.num_points3D()))
    t = time.perf_counter()
    best.write(str(out))  # cameras.bin, images.bin, points3D.bin (+ rigs/frames for COLMAP >= 3.12)
    registered = {im.name for im in best.images.values() if im.has_pose}
    summary.update(colmap.model_summary(best))
    summary["models"] = len(recs)
    summary["unregistered"] = sorted(set(names) - registered)
    colmap.top_view(best, out / "topview.png",
                    title=f"{model}: {len(registered)}/{len(names)} images, {best.num_points3D()} points")
    times["write_s"] = time.perf_counter() - t
    summary["time_s"] = {k: round(v, 3) for k, v in times.items()}
    summary["time_s"]["total_s"] = round(sum(times.values()), 3)
    _save_summary(out, summary)
    return Reconstruction(out, summary, best)
