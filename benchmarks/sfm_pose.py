"""featmatch reconstruct vs pycolmap's own SIFT pipeline, on scenes with ground-truth poses.

For every scene of a pose set (the ``featmatch eval pose`` layout: ``pairs.json`` with
``image0``, ``image1``, ``T_0to1``, ``scene``; images under ``images/``), both pipelines
reconstruct the scene's images from scratch with the same camera set-up (one shared
SIMPLE_RADIAL camera per image size, no EXIF, focal guess ``1.2 * max(W, H)``, refined):

* **COLMAP-SIFT**: ``pycolmap.extract_features`` (SIFT, CPU), ``match_exhaustive``
  (SIFT matching + geometric verification), ``incremental_mapping``;
* **featmatch MODEL**: ``featmatch.pipeline.reconstruct`` (extract, exhaustive pairs,
  match, the same pycolmap verification and mapping).

Scored per scene: registered images, 3-D points, mean track length, mean reprojection
error, wall time per stage, and the relative pose of every ground-truth pair
(rotation and translation-direction errors; a pair with an unregistered image counts as
failed), summarised as pose AUC@5/10/20 over all ground-truth pairs.

    python benchmarks/sfm_pose.py --data PATH/TO/pose --out RUN_DIR \\
        --models aliked.n16,xfeat,sift [--scenes entry-P10,castle-P19] [--mapper min_model_size=2]

Writes RUN_DIR/results.json and prints a markdown table. The machine's load average is
recorded, since wall times on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np


def scene_pairs(data: Path) -> dict:
    pairs = json.loads((data / "pairs.json").read_text())
    out: dict = {}
    for p in pairs:
        out.setdefault(p["scene"], []).append(p)
    return out


def link_images(data: Path, pairs: list, folder: Path) -> None:
    """A folder with the scene's images (symlinks), named by their file names."""
    folder.mkdir(parents=True, exist_ok=True)
    for p in pairs:
        for key in ("image0", "image1"):
            src = data / "images" / p[key]
            dst = folder / Path(p[key]).name
            if not dst.exists():
                os.symlink(src.resolve(), dst)


def pose_errors(rec, pairs: list) -> list[float]:
    from featmatch.eval.metrics import relative_pose_error
    from featmatch.pipeline.colmap import camera_poses

    poses = camera_poses(rec) if rec is not None else {}
    errs = []
    for p in pairs:
        a, b = Path(p["image0"]).name, Path(p["image1"]).name
        if a not in poses or b not in poses:
            errs.append(math.inf)
            continue
        (Ra, ta), (Rb, tb) = poses[a], poses[b]
        R = Rb @ Ra.T
        errs.append(max(relative_pose_error(np.array(p["T_0to1"]), R, tb - R @ ta)))
    return errs


def run_colmap_sift(images: Path, out: Path, seed: int, mapper: dict) -> tuple[object, dict]:
    import pycolmap

    from featmatch.pipeline import colmap

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    db = out / "database.db"
    times = {}
    t = time.perf_counter()
    pycolmap.extract_features(db, images, camera_mode=pycolmap.CameraMode.SINGLE, device=pycolmap.Device.cpu)
    times["extract_s"] = time.perf_counter() - t
    t = time.perf_counter()
    pycolmap.match_exhaustive(db, device=pycolmap.Device.cpu)  # matching + geometric verification
    times["match_s"] = time.perf_counter() - t
    t = time.perf_counter()
    recs = colmap.incremental_mapping(db, images, out / "models", options=mapper, seed=seed)
    times["mapping_s"] = time.perf_counter() - t
    times["total_s"] = sum(times.values())
    if not recs:
        return None, {"time_s": times, "registered_images": 0, "points3D": 0}
    best = max(recs.values(), key=lambda r: (r.num_reg_images(), r.num_points3D()))
    return best, {"time_s": times, **colmap.model_summary(best)}


def run_featmatch(images: Path, out: Path, model: str, overrides: dict, seed: int, mapper: dict,
                  keep: bool = False) -> tuple[object, dict]:
    from featmatch import pipeline
    from featmatch.errors import FeatmatchError

    if out.exists() and not keep:
        shutil.rmtree(out)
    try:
        r = pipeline.reconstruct(images, out, model, overrides=overrides, pairs="exhaustive", progress=False, seed=seed,
                                 mapper=mapper)
    except FeatmatchError as e:
        s = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}
        t = s.get("time_s", {})
        return None, {"error": str(e), "time_s": {**t, "total_s": sum(t.values())}, "registered_images": 0, "points3D": 0}
    return r.model, r.summary


def print_table(results: dict) -> None:
    """Markdown table of a results.json, one row per scene and method, then the pose AUC over
    all ground-truth pairs of all scenes per method."""
    from featmatch.eval.metrics import pose_auc

    print(f"load average (1/5/15 min) at start {results['load_average_start']}, end {results['load_average_end']}")
    print("| scene | method | registered | points | track len | reproj (px) | AUC@5 | AUC@10 | AUC@20 | extract s | match s | mapping s | total s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for scene, r in results["scenes"].items():
        for name, v in r["methods"].items():
            t = dict(v["time_s"])
            t.setdefault("total_s", sum(t.values()))
            match_s = t.get("match_s", 0) + t.get("verification_s", 0) + t.get("database_s", 0) + t.get("pairs_s", 0)
            reproj = v.get("mean_reprojection_error_px", float("nan"))
            print(f"| {scene} | {name} | {v.get('registered_images', 0)}/{r['images']} | {v.get('points3D', 0)} | "
                  f"{v.get('mean_track_length', 0):.2f} | {reproj:.2f} | "
                  + " | ".join(f"{100 * v['auc'][k]:.1f}" for k in ("5", "10", "20"))
                  + f" | {t.get('extract_s', 0):.1f} | {match_s:.1f} | {t.get('mapping_s', 0):.1f} | {t.get('total_s', 0):.1f} |")
    pooled: dict = {}
    for r in results["scenes"].values():
        for name, v in r["methods"].items():
            p = pooled.setdefault(name, {"errors": [], "reg": 0, "img": 0, "time": 0.0})
            p["errors"] += [math.inf if e is None else e for e in v["errors"]]
            p["reg"] += v.get("registered_images", 0)
            p["img"] += r["images"]
            p["time"] += v["time_s"].get("total_s", sum(v["time_s"].values()))
    print()
    print("| method (all scenes) | registered | GT pairs | AUC@5 | AUC@10 | AUC@20 | total s |")
    print("|---|---|---|---|---|---|---|")
    for name, p in pooled.items():
        auc = pose_auc(p["errors"], (5, 10, 20))
        print(f"| {name} | {p['reg']}/{p['img']} | {len(p['errors'])} | "
              + " | ".join(f"{100 * auc[k]:.1f}" for k in (5, 10, 20)) + f" | {p['time']:.1f} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, help="pose set root (pairs.json, images/)")
    ap.add_argument("--out", type=Path, help="run folder")
    ap.add_argument("--report", type=Path, default=None, help="only print the tables of an existing results.json")
    ap.add_argument("--models", default="aliked.n16,xfeat,sift")
    ap.add_argument("--scenes", default=None, help="comma-separated scene names (default: every scene with >= 3 images)")
    ap.add_argument("--top-k", type=int, default=4096, help="keypoints per image for sparse featmatch models")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", action="store_true",
                    help="resume featmatch's finished extraction / matching shards of an earlier run in --out "
                         "(their stage times then cover only the rest)")
    ap.add_argument("--mapper", action="append", default=[], metavar="KEY=VALUE",
                    help="pycolmap IncrementalPipelineOptions for both pipelines, e.g. min_model_size=2 (two-image scenes)")
    args = ap.parse_args()
    mapper = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.mapper)}
    if args.report:
        print_table(json.loads(args.report.read_text()))
        return 0
    if args.data is None or args.out is None:
        ap.error("--data and --out are required (or --report RESULTS_JSON)")

    import pycolmap
    import torch

    from featmatch.eval.metrics import pose_auc
    from featmatch.registry import make_config, model_card

    torch.set_num_threads(args.threads)
    pycolmap.logging.minloglevel = 2
    by_scene = scene_pairs(args.data)
    if args.scenes:
        scenes = args.scenes.split(",")
    else:
        scenes = [s for s, ps in by_scene.items() if len({p[k] for p in ps for k in ("image0", "image1")}) >= 3]
    models = args.models.split(",")
    results: dict = {"load_average_start": os.getloadavg(), "pycolmap": pycolmap.__version__, "mapper": mapper,
                     "argv": sys.argv[1:], "scenes": {}}
    for scene in scenes:
        pairs = by_scene[scene]
        images = args.out / "images" / scene
        link_images(args.data, pairs, images)
        n_img = len(list(images.iterdir()))
        res = {}
        rec, s = run_colmap_sift(images, args.out / scene / "colmap-sift", args.seed, mapper)
        res["COLMAP-SIFT"] = {**s, "errors": pose_errors(rec, pairs)}
        print(f"{scene} COLMAP-SIFT: {s.get('registered_images')}/{n_img} images, {s['time_s']['total_s']:.1f}s",
              file=sys.stderr, flush=True)
        for m in models:
            sparse = model_card(m).kind == "sparse"
            ov = {"top_k": args.top_k} if sparse and hasattr(make_config(m), "top_k") and args.top_k else {}
            rec, s = run_featmatch(images, args.out / scene / m, m, ov, args.seed, mapper, args.keep)
            res[f"featmatch {m}"] = {**s, "errors": pose_errors(rec, pairs), "overrides": ov}
            print(f"{scene} {m}: {s.get('registered_images')}/{n_img} images, {s['time_s'].get('total_s', 0):.1f}s",
                  file=sys.stderr, flush=True)
        for v in res.values():
            v["auc"] = {str(k): float(a) for k, a in pose_auc(v["errors"], (5, 10, 20)).items()}
            v["errors"] = [None if not math.isfinite(e) else round(e, 3) for e in v["errors"]]
        results["scenes"][scene] = {"images": n_img, "gt_pairs": len(pairs), "methods": res}
    results["load_average_end"] = os.getloadavg()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1, default=str))

    print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
