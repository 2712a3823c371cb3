"""A held-out homography root (HPatches layout) of synthetic warps of your own photos, for
model selection without touching the evaluation data.

    python scripts/make_synthetic_homography.py --images PHOTOS --out ROOT \
        [--every 10] [--sequences 40] [--warps 2] [--size 640x480] [--seed 0]

Photos: every ``--every``-th file of ``--images`` (sorted, recursive; the files a LIFT patch
set or ``--val-split tenth`` holds out), drawn with a seeded generator. Each sequence
``ROOT/syn_000/`` holds ``1.png`` (a crop of one photo at ``--size``), ``2.png`` ..
(``--warps`` random homographies of the same crop, :func:`featmatch.data.synthetic.random_homography`;
every image with featmatch's photometric augmentation) and ``H_1_k`` (text, ``x_k ~ H_1_k x_1`` in pixels).
The geometry is HPatches-viewpoint-like by default (rotation +/-``--rotation`` degrees, scale
``--scale``, perspective ``--perspective``). Evaluate with any ``featmatch eval`` command that
reads a homography root, e.g. ``featmatch eval detdesc --data ROOT``.

The root is written to a temporary folder and renamed at the end (no half-written root);
an existing ``--out`` is an error.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"--size must be WxH, e.g. 640x480, got {text!r}") from None
    if w < 64 or h < 64:
        raise SystemExit(f"--size must be at least 64x64, got {text!r}")
    return w, h


def parse_range(text: str, what: str) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in text.split(","))
    except ValueError:
        raise SystemExit(f"{what} must be MIN,MAX, got {text!r}") from None
    if not 0 < a <= b:
        raise SystemExit(f"{what} must satisfy 0 < MIN <= MAX, got {text!r}")
    return a, b


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", required=True, type=Path, help="photo folder (searched recursively)")
    ap.add_argument("--out", required=True, type=Path, help="new homography root to write")
    ap.add_argument("--every", type=int, default=10, help="use every N-th photo (default 10)")
    ap.add_argument("--sequences", type=int, default=40)
    ap.add_argument("--warps", type=int, default=2, help="warped images per sequence (default 2)")
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--rotation", type=float, default=30.0, help="+/- degrees (default 30)")
    ap.add_argument("--scale", default="0.7,1.4", help="MIN,MAX of image k w.r.t. image 1 (default 0.7,1.4)")
    ap.add_argument("--perspective", type=float, default=0.15, help="corner jitter, fraction of the size")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import cv2

    from featmatch.data import SyntheticConfig, list_images
    from featmatch.data.synthetic import photometric, random_homography, read_photo_u8
    from featmatch.errors import FeatmatchError

    if args.every < 1 or args.sequences < 1 or args.warps < 1:
        raise SystemExit("--every, --sequences and --warps must be at least 1")
    if args.out.exists():
        raise SystemExit(f"{args.out} exists; choose a new --out")
    try:
        files = list_images(args.images)[::args.every]
    except FeatmatchError as e:
        raise SystemExit(str(e)) from None
    cfg = SyntheticConfig(size=parse_size(args.size), seed=args.seed, max_rotation_deg=args.rotation,
                          scale_range=parse_range(args.scale, "--scale"), perspective=args.perspective)
    w, h = cfg.size
    rng = np.random.default_rng(args.seed)
    photos = rng.choice(len(files), size=min(args.sequences, len(files)), replace=False)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=args.out.name + ".", dir=args.out.parent))
    try:
        for s, i in enumerate(photos):
            r = np.random.default_rng([args.seed, s])
            try:
                photo = read_photo_u8(files[i])
            except FeatmatchError as e:
                raise SystemExit(str(e)) from None
            ph, pw = photo.shape[:2]
            side = min(pw / w, ph / h) * r.uniform(0.7, 1.0)  # crop with the output's aspect ratio
            x0, y0 = r.uniform(0, max(pw - w * side, 0)), r.uniform(0, max(ph - h * side, 0))
            A = np.array([[1 / side, 0, -x0 / side], [0, 1 / side, -y0 / side], [0, 0, 1.0]])
            crop = cv2.warpPerspective(photo, A, (w, h), flags=cv2.INTER_AREA if side > 1 else cv2.INTER_LINEAR,
                                       borderMode=cv2.BORDER_REFLECT)
            seq = tmp / f"syn_{s:03d}"
            seq.mkdir()
            img1, _ = photometric(crop, r, cfg)
            _write(seq / "1.png", img1)
            for k in range(2, args.warps + 2):
                H = random_homography(r, (w, h), cfg)
                warped = cv2.warpPerspective(crop, H, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
                img_k, _ = photometric(warped, r, cfg)
                _write(seq / f"{k}.png", img_k)
                np.savetxt(seq / f"H_1_{k}", H)
        tmp.rename(args.out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"{args.out}: {len(photos)} sequences x {args.warps} warps from {len(files)} photos "
          f"(every {args.every}-th of {args.images})")
    return 0


def _write(path: Path, img: np.ndarray) -> None:
    """``(H, W, 3)`` float RGB in [0, 1] -> 8-bit PNG."""
    import cv2

    u8 = (img * 255 + 0.5).clip(0, 255).astype(np.uint8)
    if not cv2.imwrite(str(path), np.ascontiguousarray(u8[..., ::-1])):
        raise SystemExit(f"cannot write {path}")


if __name__ == "__main__":
    sys.exit(main())
