"""``featmatch eval homography|pose``: benchmark several models into one table.

Registered with :func:`featmatch.cli.register_command` when the featmatch CLI loads its
plugins. Usage errors raise :class:`~featmatch.errors.UsageError` (exit code 2), data and
runtime problems other :class:`~featmatch.errors.FeatmatchError` subclasses (exit code 1).
"""

from __future__ import annotations

import argparse
import shlex
from typing import Any

from ..cli import register_command
from ..errors import UsageError

_USAGE = ("featmatch eval homography --models xfeat,sift --data ROOT --output DIR | "
          "featmatch eval pose --models xfeat --data ROOT --output DIR")


def _common(p: argparse.ArgumentParser, default_threshold: float) -> None:
    p.add_argument("--models", required=True, help="comma-separated model names, e.g. xfeat,aliked.n16,sift; an entry "
                        "LABEL=NAME@WEIGHTS evaluates NAME with a weight file under LABEL")
    p.add_argument("--data", required=True, metavar="ROOT", help="data root (see docs/evaluation.md for the layout)")
    p.add_argument("--output", required=True, metavar="DIR",
                   help="folder for the JSON / markdown / PNG reports and the prediction cache")
    p.add_argument("--resize", type=int, default=None, metavar="N",
                   help="resize images so the long side is N px (default: original size)")
    p.add_argument("--max-keypoints", type=int, default=None, metavar="N",
                   help="keypoint limit (top_k) for every model (default: each model's own)")
    p.add_argument("--threshold", type=float, default=default_threshold,
                   help=f"estimator inlier threshold in pixels (default: {default_threshold:g})")
    p.add_argument("--method", default="usac_magsac",
                   help="OpenCV robust method: usac_magsac (default), usac_accurate, usac_default, ransac, ...")
    p.add_argument("--estimator", choices=("opencv", "poselib"), default="opencv",
                   help="opencv: USAC (--method); poselib: LO-RANSAC with non-linear refinement (pip install "
                        "poselib); reports of the two estimators are written side by side")
    p.add_argument("--max-pairs", type=int, default=None, metavar="N",
                   help="use N pairs evenly spread over the sorted list, so every sequence is sampled (quick runs)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="a config option for every model (--set detection_threshold=0.1) or for one listed model "
                        "(--set xfeat:top_k=1024); typed like `featmatch match --set`; part of the cache key")
    p.add_argument("--overwrite", action="store_true", help="recompute predictions even if cached")
    p.add_argument("--device", default=None, help="torch device (default: cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG plot")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="benchmark", parser_class=type(parser))
    h = sub.add_parser("homography", help="HPatches-layout homography benchmark (MHA, AUC, MMA)")
    _common(h, 3.0)
    p = sub.add_parser("pose", help="relative pose on MegaDepth-1500 / ScanNet-1500 style pair lists (AUC@5/10/20)")
    _common(p, 0.5)
    d = sub.add_parser("detdesc", help="LIFT's tables: repeatability, NN mAP, matching score (+ --swap: "
                                       "LIFT/SIFT component swaps) on a homography root")
    d.add_argument("--models", default="", help="comma-separated sparse model names (may be empty with --swap)")
    d.add_argument("--data", required=True, metavar="ROOT", help="homography data root (HPatches layout)")
    d.add_argument("--output", required=True, metavar="DIR", help="folder for detdesc.json / detdesc.md")
    d.add_argument("--max-keypoints", type=int, default=1000, metavar="N", help="keypoints per image (default 1000)")
    d.add_argument("--threshold", type=float, default=3.0, help="correspondence distance in pixels (default 3)")
    d.add_argument("--swap", action="store_true", help="add the component-swap table (detector / orientation / "
                   "descriptor of SIFT or LIFT)")
    d.add_argument("--lift-weights", default=None, help="LIFT weight file for --swap (default: the installed one)")
    d.add_argument("--lift-descriptor-weights", default=None, metavar="H5",
                   help="the authors' Theano descriptor file: adds SIFT keypoints described by it to --swap")
    d.add_argument("--max-pairs", type=int, default=None, metavar="N", help="use only the first N pairs")
    d.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="a config option for every listed model (--set nms_radius=2) or for one "
                        "(--set mine:scales_per_octave=3, LABEL=NAME labels); typed like `featmatch match --set`; "
                        "options for `lift` also apply to --swap's LIFT")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from .predict import parse_models

    if not getattr(args, "benchmark", None):
        raise UsageError(f"choose a benchmark: {_USAGE}")
    if args.benchmark == "detdesc":
        from .detdesc import run as run_detdesc

        names = [n.strip() for n in args.models.split(",") if n.strip()]
        if not names and not args.swap:
            raise UsageError("featmatch eval detdesc needs --models and/or --swap")
        rep = run_detdesc(names, args.data, args.output, max_keypoints=args.max_keypoints, threshold=args.threshold,
                          swap=args.swap, lift_weights=args.lift_weights,
                          lift_descriptor_weights=args.lift_descriptor_weights, max_pairs=args.max_pairs,
                          progress=not args.no_progress, command=_command(args), options=args.set)
        from .detdesc import markdown

        print(markdown(rep))
        for path in rep["outputs"].values():
            print(f"wrote {path}")
        return 0
    models = parse_models(args.models)
    command = _command(args)
    common: dict[str, Any] = dict(resize=args.resize, max_keypoints=args.max_keypoints, threshold=args.threshold,
                                  method=args.method, overwrite=args.overwrite, max_pairs=args.max_pairs,
                                  device=args.device, progress=not args.no_progress, plot=not args.no_plot,
                                  command=command, options=args.set, estimator=args.estimator)
    if args.method not in _methods():
        raise UsageError(f"unknown --method '{args.method}'; use one of {', '.join(_methods())}")
    if args.estimator == "poselib" and args.method != "usac_magsac":
        raise UsageError("--method picks OpenCV's robust method; with --estimator poselib drop it "
                         "(poselib runs its own LO-RANSAC)")
    if args.benchmark == "homography":
        from .homography import run as run_bench
        from .report import homography_table as table
    else:
        from .pose import run as run_bench
        from .report import pose_table as table
    rep = run_bench(models, args.data, args.output, **common)
    first = next(iter(rep["models"].values()))
    for group in first["summary"]:
        if len(first["summary"]) > 1:
            print(f"\n{group}:")
        print(table(rep, group))
    for path in rep["outputs"].values():
        print(f"wrote {path}")
    return 0


def _command(args: argparse.Namespace) -> str:
    """The equivalent command line, rebuilt from the parsed options (defaults left out)."""
    parts = ["featmatch", "eval", args.benchmark]
    for opt in ("models", "data", "output", "resize", "max_keypoints", "estimator", "method", "threshold",
                "max_pairs", "device", "lift_weights", "lift_descriptor_weights"):
        v = getattr(args, opt, None)
        if v == "" or (args.benchmark == "detdesc" and opt == "max_keypoints" and v == 1000):
            continue
        default = {"method": "usac_magsac", "estimator": "opencv",
                   "threshold": 3.0 if args.benchmark == "homography" else 0.5}.get(opt)
        if v is not None and v != default:
            parts += [f"--{opt.replace('_', '-')}", shlex.quote(str(v))]
    parts += [f"--{f.replace('_', '-')}" for f in ("overwrite", "swap") if getattr(args, f, False)]
    for item in getattr(args, "set", None) or []:
        parts += ["--set", shlex.quote(item)]
    return " ".join(parts)


def _methods() -> tuple:
    from ..estimators import _METHODS

    return tuple(_METHODS)


register_command("eval", "benchmarks: homography (HPatches layout), pose (pair lists)", add_arguments, run)
