"""Step 4: COLMAP export and mapping through pycolmap (the ``sfm`` extra).

* :func:`cameras_for`: intrinsics per image: EXIF focal length when the file has one
  (pycolmap reads it), else shared-camera defaults (one ``SIMPLE_RADIAL`` camera per
  image size, focal ``1.2 * max(W, H)`` as COLMAP guesses it); a user model / params
  override both.
* :func:`write_database`: cameras, images, keypoints (+0.5: COLMAP puts the origin at the
  corner of the top-left pixel) and raw matches into a new COLMAP database.
* :func:`verify` (pycolmap's geometric verification) and :func:`incremental_mapping`.
* :func:`model_summary` and :func:`top_view` describe the result.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from ..errors import FeatmatchError, UsageError
from . import store

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]


def pycolmap():
    try:
        import pycolmap as _pc
    except ImportError as e:
        raise FeatmatchError("reconstruction needs pycolmap: pip install 'featmatch[sfm]'") from e
    return _pc


def cameras_for(images: PathLike, names: Sequence[str], sizes: dict, *, camera_model: str = "SIMPLE_RADIAL",
                camera_params: Optional[Sequence[float]] = None, single_camera: bool = False) -> tuple[list, dict]:
    """Cameras and the camera index of each image.

    Args:
        sizes: ``{name: (W, H)}`` from the features file.
        camera_params: COLMAP parameters of ``camera_model`` for every image (overrides EXIF).
        single_camera: one camera for all images (they must have one size).

    Returns:
        ``(cameras, {name: camera index})``; cameras are ``pycolmap.Camera`` objects.
    """
    pc = pycolmap()
    try:
        model_id = getattr(pc.CameraModelId, camera_model)
    except AttributeError:
        raise UsageError(f"unknown COLMAP camera model '{camera_model}' (e.g. SIMPLE_PINHOLE, PINHOLE, "
                         "SIMPLE_RADIAL, RADIAL, OPENCV)") from None
    cams: list = []
    keys: dict = {}
    of: dict = {}
    for name in names:
        w, h = (int(v) for v in sizes[name])
        if camera_params is not None:
            cam = pc.Camera(model=camera_model, width=w, height=h, params=list(camera_params))
            try:
                cam.has_prior_focal_length = True
                ok = cam.verify_params()
            except Exception:  # noqa: BLE001 - pycolmap raises various types
                ok = False
            if not ok:
                raise UsageError(f"--camera-params {list(camera_params)} do not fit camera model {camera_model}")
            key = ("user", w, h)
        else:
            exif = pc.infer_camera_from_image(str(Path(images) / name))
            focal = float(exif.params[0]) if exif.has_prior_focal_length else 1.2 * max(w, h)
            if exif.has_prior_focal_length and (exif.width, exif.height) != (w, h):
                focal *= max(w, h) / max(exif.width, exif.height)
            cam = pc.Camera.create_from_model_id(0, model_id, focal, w, h)
            cam.has_prior_focal_length = bool(exif.has_prior_focal_length)
            key = ("exif", round(focal, 1), w, h) if exif.has_prior_focal_length else ("default", w, h)
        if single_camera:
            if cams and (cams[0].width, cams[0].height) != (w, h):
                raise UsageError(f"--single-camera needs images of one size; {name} is {w}x{h}, "
                                 f"others {cams[0].width}x{cams[0].height}")
            key = ("single",)
        if key not in keys:
            keys[key] = len(cams)
            cams.append(cam)
        of[name] = keys[key]
    return cams, of


def write_database(db_path: PathLike, images: PathLike, features: PathLike, matches: PathLike,
                   pairs: Sequence[tuple[str, str]], *, camera_model: str = "SIMPLE_RADIAL",
                   camera_params: Optional[Sequence[float]] = None, single_camera: bool = False) -> dict:
    """Write a fresh COLMAP database; returns ``{name: image_id}``."""
    pc = pycolmap()
    db_path = Path(db_path)
    if db_path.exists():
        db_path.unlink()
    with store.h5py().File(features, "r") as f:
        names = sorted({n for p in pairs for n in p})
        recs = {n: store.read_features(f, n) for n in names}
    sizes = {n: tuple(r["image_size"]) for n, r in recs.items()}
    cams, cam_of = cameras_for(images, names, sizes, camera_model=camera_model, camera_params=camera_params,
                               single_camera=single_camera)
    db = pc.Database.open(str(db_path))
    try:
        cam_ids = [db.write_camera(c) for c in cams]
        ids = {}
        for n in names:
            ids[n] = db.write_image(pc.Image(name=n, camera_id=cam_ids[cam_of[n]]))
            db.write_keypoints(ids[n], (recs[n]["keypoints"].astype(np.float64) + 0.5).astype(np.float32))
        for a, b, m0, _ in store.iter_pairs_matches(matches, pairs):
            valid = np.flatnonzero(m0 >= 0)
            db.write_matches(ids[a], ids[b], np.stack([valid, m0[valid]], 1).astype(np.uint32))
    finally:
        db.close()
    return ids


def verify(db_path: PathLike, pairs_path: PathLike, *, max_error: float = 4.0, min_inliers: int = 15) -> None:
    """pycolmap's geometric verification (F / E / H with RANSAC) of the database's matches."""
    pc = pycolmap()
    opts = pc.TwoViewGeometryOptions()
    opts.ransac.max_error = float(max_error)
    opts.min_num_inliers = int(min_inliers)
    pc.verify_matches(str(db_path), str(pairs_path), opts)


def verified_pairs(db_path: PathLike) -> list[tuple[str, str, int]]:
    """``(name0, name1, inliers)`` of the verified pairs, most inliers first."""
    pc = pycolmap()
    db = pc.Database.open(str(db_path))
    try:
        names = {im.image_id: im.name for im in db.read_all_images()}
        pair_ids, counts = db.read_two_view_geometry_num_inliers()
    finally:
        db.close()
    out = []
    for pid, c in zip(pair_ids, counts):
        i, j = pc.pair_id_to_image_pair(pid)
        out.append((names[i], names[j], int(c)))
    return sorted(out, key=lambda r: -r[2])


def set_options(obj: Any, options: dict, prefix: str = "") -> None:
    """Set (nested) pycolmap option attributes, e.g. ``{"mapper.init_min_num_inliers": 50}``."""
    for key, value in options.items():
        target = obj
        parts = key.split(".")
        for p in parts[:-1]:
            if not hasattr(target, p):
                raise UsageError(f"unknown mapper option '{prefix}{key}'")
            target = getattr(target, p)
        if not hasattr(target, parts[-1]):
            raise UsageError(f"unknown mapper option '{prefix}{key}'")
        try:
            setattr(target, parts[-1], value)
        except TypeError as e:
            raise UsageError(f"mapper option '{prefix}{key}': bad value {value!r} ({e})") from None


def incremental_mapping(db_path: PathLike, images: PathLike, out_dir: PathLike, *, options: Optional[dict] = None,
                        seed: int = 0) -> dict:
    """pycolmap's incremental mapper; returns ``{index: Reconstruction}`` (may be empty)."""
    pc = pycolmap()
    opts = pc.IncrementalPipelineOptions()
    opts.random_seed = int(seed)
    opts.mapper.random_seed = int(seed)
    opts.triangulation.random_seed = int(seed)
    set_options(opts, options or {})
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    return pc.incremental_mapping(str(db_path), str(images), str(out_dir), opts)


def model_summary(rec: Any) -> dict:
    """Registered images, points, mean track length and reprojection error of a model."""
    return {
        "registered_images": int(rec.num_reg_images()),
        "points3D": int(rec.num_points3D()),
        "mean_track_length": float(rec.compute_mean_track_length()) if rec.num_points3D() else 0.0,
        "mean_reprojection_error_px": float(rec.compute_mean_reprojection_error()) if rec.num_points3D() else math.nan,
        "observations": int(rec.compute_num_observations()),
    }


def camera_poses(rec: Any) -> dict:
    """``{name: (R (3, 3), t (3,))}`` world-to-camera of every registered image."""
    out = {}
    for im in rec.images.values():
        if not im.has_pose:
            continue
        T = im.cam_from_world()
        m = T.matrix()
        out[im.name] = (np.asarray(m[:, :3]), np.asarray(m[:, 3]))
    return out


def top_view(rec: Any, path: PathLike, title: str = "") -> Path:
    """Save a top view (PNG) of the 3-D points and camera centres.

    "Up" is the mean of the cameras' up directions (minus their image y axes), so the
    view looks down on the scene for photos taken upright.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..io import atomic_path

    poses = camera_poses(rec)
    pts = np.array([p.xyz for p in rec.points3D.values()]).reshape(-1, 3)
    centres = np.array([-R.T @ t for R, t in poses.values()]).reshape(-1, 3)
    up = -np.mean([R[1] for R, _ in poses.values()], axis=0) if poses else np.array([0, 0, 1.0])
    up = up / max(np.linalg.norm(up), 1e-12)
    a = np.cross(up, [1.0, 0, 0] if abs(up[0]) < 0.9 else [0, 1.0, 0])
    a /= np.linalg.norm(a)
    b = np.cross(up, a)
    fig, ax = plt.subplots(figsize=(6, 6), dpi=100)
    if len(pts):
        keep = pts
        if len(pts) > 20:  # clip far outliers so the scene fills the view
            med = np.median(pts, 0)
            d = np.linalg.norm(pts - med, axis=1)
            keep = pts[d <= np.percentile(d, 98)]
        ax.scatter(keep @ a, keep @ b, s=1, c="0.3", alpha=0.6, label=f"{len(pts)} points")
    if len(centres):
        ax.scatter(centres @ a, centres @ b, s=30, c="red", marker="^", label=f"{len(centres)} cameras")
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(title or "top view", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    with atomic_path(path) as tmp:
        fig.savefig(tmp, bbox_inches="tight")
    plt.close(fig)
    return Path(path)
