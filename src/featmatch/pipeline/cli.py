"""``featmatch extract | pairs | reconstruct`` and the ``match --pairs`` mode.

Registered with :func:`featmatch.cli.register_command` when the CLI loads its plugins;
the ``match`` command of :mod:`featmatch.cli` hands over to :func:`run_match` when it is
given ``--pairs`` (see :func:`add_match_options`).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..cli import _overrides, model_overrides, register_command
from ..errors import UsageError

log = logging.getLogger(__name__)


def _model_overrides(args: argparse.Namespace) -> dict:
    """--set / --max-keypoints / --resize for args.model, typed by its config like `featmatch match`."""
    return model_overrides(args.model, getattr(args, "set", None),
                           top_k=("--max-keypoints", getattr(args, "max_keypoints", None)),
                           resize=("--resize", getattr(args, "resize", None)))


def _common_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-keypoints", type=int, default=None, help="keypoints per image (top_k)")
    p.add_argument("--resize", type=int, default=None, help="resize so the long side is N pixels")
    p.add_argument("--weights", default=None, metavar="PATH", help="weight file instead of the cached one")
    p.add_argument("--device", default=None, help="torch device (default: cpu)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any model config option")


def _common_engine(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local (in this process) or ray (tasks sharded by image / pair)")
    p.add_argument("--ray-address", default=None, help="Ray cluster to join (default: RAY_ADDRESS or a new local one)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _quiet_colmap(args: argparse.Namespace) -> None:
    try:
        import pycolmap
    except ImportError:
        return
    if not getattr(args, "debug", False):
        pycolmap.logging.minloglevel = 2  # COLMAP's INFO lines only with --debug


# ----------------------------------------------------------------------------- extract
def _extract_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="sparse model name (see `featmatch list`)")
    p.add_argument("--images", required=True, help="folder of photos (recursive)")
    p.add_argument("--out", required=True, help="features file (.h5), created or completed")
    p.add_argument("--batch-size", type=int, default=4, help="images per forward pass (default 4)")
    p.add_argument("--shard-size", type=int, default=16, help="images per shard file / Ray task (default 16)")
    _common_model(p)
    _common_engine(p)


def _extract_run(args: argparse.Namespace) -> int:
    from .extraction import extract

    res = extract(args.images, args.out, args.model, overrides=_model_overrides(args), weights=args.weights,
                  device=args.device, batch_size=args.batch_size, shard_size=args.shard_size, engine=args.engine,
                  ray_address=args.ray_address, progress=not args.no_progress)
    print(f"{res.num_images} images in {res.path} ({res.computed} computed now, "
          f"{res.num_images - min(res.computed, res.num_images)} already there)")
    if res.skipped:
        print(f"skipped {len(res.skipped)} files: " + "; ".join(f"{k}: {v}" for k, v in list(res.skipped.items())[:5]))
    return 0


# ----------------------------------------------------------------------------- pairs
def _pairs_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("mode", choices=("exhaustive", "sequential", "from-list", "retrieval"))
    p.add_argument("list_file", nargs="?", default=None, help="from-list: the pairs file to check")
    p.add_argument("--images", default=None, help="image folder (names of the collection)")
    p.add_argument("--features", default=None, help="features file (names; descriptors for retrieval)")
    p.add_argument("--out", required=True, help="pairs file to write (hloc pairs.txt)")
    p.add_argument("--window", type=int, default=5, help="sequential: next N images (default 5)")
    p.add_argument("--num", type=int, default=10, help="retrieval: most similar K images each (default 10)")
    p.add_argument("--clusters", type=int, default=32, help="retrieval: VLAD codebook size (default 32)")


def _pairs_run(args: argparse.Namespace) -> int:
    from . import pairs as P
    from . import store
    from .extraction import list_images

    if args.mode == "retrieval":
        if not args.features:
            raise UsageError("pairs retrieval needs --features (a sparse model's features.h5)")
        names = None
    elif args.features:
        names = store.feature_names(args.features)
    elif args.images:
        names = list_images(args.images)[0]
    else:
        raise UsageError(f"pairs {args.mode} needs --images DIR or --features FILE for the image names")
    if args.mode == "exhaustive":
        pl = P.exhaustive(names)
    elif args.mode == "sequential":
        pl = P.sequential(names, args.window)
    elif args.mode == "from-list":
        if not args.list_file:
            raise UsageError("pairs from-list needs the pairs file: featmatch pairs from-list FILE --images DIR --out OUT")
        pl = P.from_list(args.list_file, names)
    else:
        pl = P.retrieval(args.features, args.num, clusters=args.clusters)
    P.write_pairs(pl, args.out)
    print(f"{len(pl)} pairs -> {args.out}")
    return 0


# ----------------------------------------------------------------------------- match --pairs
def add_match_options(p: argparse.ArgumentParser) -> None:
    """Options of ``featmatch match`` for many pairs (called by :mod:`featmatch.cli`)."""
    g = p.add_argument_group("many pairs (instead of IMAGE0 IMAGE1)")
    g.add_argument("--pairs", default=None, metavar="PAIRS_TXT", help="pairs file (hloc pairs.txt)")
    g.add_argument("--features", default=None, metavar="H5",
                   help="sparse: features file from `featmatch extract` (the model is read from it); "
                        "dense (with --images): merged keypoints written here")
    g.add_argument("--images", default=None, metavar="DIR", help="dense models: the image folder")
    g.add_argument("--out", default=None, metavar="H5", help="matches file to write (hloc matches0 layout)")
    g.add_argument("--merge-tolerance", type=float, default=1.0,
                   help="dense: keypoints of an image closer than this cell (px) merge (default 1)")
    g.add_argument("--shard-size", type=int, default=None, help="pairs per shard / Ray task")
    g.add_argument("--matcher-weights", default=None, metavar="PATH",
                   help="sparse, learned matchers (LightGlue): weight file instead of the cached official one")
    g.add_argument("--batch-size", type=int, default=1,
                   help="sparse, learned matchers: pairs per padded forward pass (default 1; >1 is for GPUs)")
    _common_engine(g)


def run_match(args: argparse.Namespace) -> int:
    """``featmatch match --pairs P --out M (--features F | --model DENSE --images DIR --features F)``."""
    from ..cli import set_threads
    from . import pairs as P
    from .matching import match_dense, match_features

    if args.image0 is not None or args.image1 is not None:
        raise UsageError("give either two images or --pairs, not both")
    if not args.out:
        raise UsageError("match --pairs needs --out matches.h5")
    if not args.features:
        raise UsageError("match --pairs needs --features (from `featmatch extract`; for a dense model, the "
                         "merged keypoints file to write, with --images)")
    set_threads(getattr(args, "threads", None))
    pl = P.read_pairs(args.pairs)
    common = dict(engine=args.engine, ray_address=args.ray_address, progress=not args.no_progress)
    if args.images:
        if args.matcher_weights or args.batch_size != 1:
            raise UsageError("--matcher-weights and --batch-size are for matching stored sparse features "
                             "(--features without --images)")
        ov = _model_overrides(args)
        match_dense(args.images, pl, args.out, args.features, args.model, overrides=ov, weights=args.weights,
                    device=args.device, tolerance=args.merge_tolerance, shard_size=args.shard_size or 16, **common)
        print(f"{len(pl)} pairs -> {args.out} (merged keypoints: {args.features})")
    else:
        sets = list(args.set or [])
        chosen = [a for a in sets if a.split("=", 1)[0].strip() == "matcher"]  # --set matcher=lightglue
        if len(chosen) > 1:
            raise UsageError("matcher given twice (--set matcher=...); give it once")
        matcher = chosen[0].split("=", 1)[1].strip() if chosen else None
        ov = _overrides([a for a in sets if a not in chosen])
        match_features(args.features, pl, args.out, matcher=matcher, overrides=ov,
                       matcher_weights=args.matcher_weights, device=args.device, batch_size=args.batch_size,
                       shard_size=args.shard_size or 256, **common)
        print(f"{len(pl)} pairs -> {args.out}")
    return 0


# ----------------------------------------------------------------------------- reconstruct
def _reconstruct_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--images", required=True, help="folder of photos (recursive)")
    p.add_argument("--model", default="xfeat", help="any model: sparse or dense (default xfeat)")
    p.add_argument("--out", required=True, help="output folder (COLMAP model, summary.json, topview.png)")
    p.add_argument("--pairs", choices=("auto", "exhaustive", "sequential", "retrieval", "from-list"), default="auto",
                   help="auto: exhaustive up to 40 images, else retrieval (sparse) / sequential (dense)")
    p.add_argument("--pairs-file", default=None, help="from-list: the pairs file")
    p.add_argument("--window", type=int, default=5, help="sequential window (default 5)")
    p.add_argument("--num", type=int, default=20, help="retrieval: pairs per image (default 20)")
    p.add_argument("--camera-model", default="SIMPLE_RADIAL", help="COLMAP camera model (default SIMPLE_RADIAL)")
    p.add_argument("--camera-params", default=None, metavar="P1,P2,...",
                   help="intrinsics for every image in COLMAP's order (e.g. f,cx,cy,k); default EXIF, else shared defaults")
    p.add_argument("--single-camera", action="store_true", help="one camera for all images")
    p.add_argument("--mapper", action="append", metavar="KEY=VALUE",
                   help="pycolmap IncrementalPipelineOptions, e.g. mapper.init_min_num_inliers=50")
    p.add_argument("--merge-tolerance", type=float, default=1.0, help="dense models: keypoint merge cell (px)")
    p.add_argument("--matcher-weights", default=None, metavar="PATH",
                   help="learned matchers (aliked.n16+lightglue): weight file instead of the cached official one")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    _common_model(p)
    _common_engine(p)


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, prefix + k + "."))
        else:
            out[prefix + k] = v
    return out


def _reconstruct_run(args: argparse.Namespace) -> int:
    from .reconstruction import reconstruct

    _quiet_colmap(args)
    params = None
    if args.camera_params:
        try:
            params = [float(v) for v in args.camera_params.split(",")]
        except ValueError:
            raise UsageError(f"--camera-params must be numbers separated by commas, got '{args.camera_params}'") from None
    mapper = _flat(_overrides(args.mapper)) if args.mapper else None
    r = reconstruct(args.images, args.out, args.model, overrides=_model_overrides(args), weights=args.weights,
                    device=args.device, pairs=args.pairs, window=args.window, num=args.num,
                    pairs_file=args.pairs_file, camera_model=args.camera_model, camera_params=params,
                    single_camera=args.single_camera, mapper=mapper, tolerance=args.merge_tolerance,
                    batch_size=args.batch_size, matcher_weights=args.matcher_weights, engine=args.engine,
                    ray_address=args.ray_address, progress=not args.no_progress, seed=args.seed)
    s = r.summary
    print(f"registered images: {s['registered_images']} / {s['readable_images']}"
          + (f" (unregistered: {', '.join(s['unregistered'][:5])})" if s["unregistered"] else ""))
    print(f"3-D points: {s['points3D']}  mean track length: {s['mean_track_length']:.2f}  "
          f"mean reprojection error: {s['mean_reprojection_error_px']:.3f} px")
    print("time: " + "  ".join(f"{k[:-2]} {v:.1f}s" for k, v in s["time_s"].items()))
    if s["skipped"]:
        print(f"skipped {len(s['skipped'])} files: " + "; ".join(f"{k} ({v})" for k, v in list(s["skipped"].items())[:5]))
    print(f"wrote {Path(args.out) / 'cameras.bin'}, images.bin, points3D.bin, summary.json, topview.png")
    return 0


register_command("extract", "local features of a folder of photos into features.h5 (hloc layout, resumable)",
                 _extract_args, _extract_run)
register_command("pairs", "image pairs to match: exhaustive | sequential | from-list | retrieval (pairs.txt)",
                 _pairs_args, _pairs_run)
register_command("reconstruct", "folder of photos -> COLMAP model (extract, pairs, match, pycolmap mapping)",
                 _reconstruct_args, _reconstruct_run)
