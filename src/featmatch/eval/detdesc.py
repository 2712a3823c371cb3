"""LIFT's evaluation (Yi et al. ECCV 2016, Tables 1-3) on a homography data root.

``featmatch eval detdesc --models lift,sift,... --data ROOT --output DIR [--swap]``

For every pair of the root (HPatches layout, :func:`featmatch.eval.data.homography_pairs`)
and every sparse model, with at most ``max_keypoints`` (1000, the paper's) keypoints per
image, the pure metric functions of :mod:`featmatch.eval.metrics`:

* ``rep``: :func:`~featmatch.eval.metrics.repeatability` (3 px, shared viewpoint region);
* ``nn_map``: :func:`~featmatch.eval.metrics.nn_map` of the descriptors of the keypoints in
  the shared region, ground truth = keypoints within 3 px under the homography;
* ``ms``: :func:`~featmatch.eval.metrics.matching_score` (nearest-neighbour matching made
  one-to-one, correct within 3 px, over ``min(n0, n1)``).

Means over pairs (pairs without ground-truth correspondences do not enter ``nn_map``).

``--swap`` adds the component-swap table of the paper (Table 3) for LIFT: every
combination of detector (SIFT's or LIFT's), orientation (SIFT's or LIFT's ORI) and
descriptor (SIFT's or LIFT's DESC), plus, with ``--lift-descriptor-weights PATH``, SIFT
keypoints and orientations described by the authors' released descriptor. SIFT here is
OpenCV's (its 1000 strongest keypoints by response, coordinates in featmatch's pixel-centre
convention); SIFT's orientation at LIFT keypoints is the dominant gradient orientation (36
bins over a Gaussian window of 1.5 sigma, as SIFT's, one orientation per point); SIFT
descriptors at given keypoints come from ``cv2.SIFT.compute`` with size ``2 sigma`` and the
given angle. All descriptors are L2-normalised and compared by L2 distance.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from ..errors import UsageError
from ..io import atomic_path
from .data import HomographyPair, homography_pairs
from .metrics import correspondence_mask_h, matching_score, nn_map, repeatability, visible_mask_h

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- scoring
def score_features(f0: dict, f1: dict, H: np.ndarray, size0: tuple, size1: tuple, threshold: float = 3.0,
                   max_keypoints: int = 1000) -> dict:
    """``rep``, ``nn_map``, ``ms`` of one pair. ``f`` = ``{"kpts" (N, 2), "scores" (N,), "desc" (N, D)}``."""
    k0, k1 = f0["kpts"], f1["kpts"]
    rep = repeatability(k0, k1, H, size0, size1, threshold, max_keypoints, f0.get("scores"), f1.get("scores"))
    ms = matching_score(k0, k1, H, size0, size1, desc0=f0["desc"], desc1=f1["desc"], threshold=threshold,
                        max_keypoints=max_keypoints, scores0=f0.get("scores"), scores1=f1.get("scores"))

    def sel(f, Hm, size):
        idx = np.argsort(-f["scores"], kind="stable")[:max_keypoints] if f.get("scores") is not None else np.arange(len(f["kpts"]))[:max_keypoints]
        return idx[visible_mask_h(f["kpts"][idx], Hm, size)] if len(idx) else idx

    s0, s1 = sel(f0, H, size1), sel(f1, np.linalg.inv(H), size0)
    ap = math.nan
    if len(s0) and len(s1):
        gt = correspondence_mask_h(k0[s0], k1[s1], H, threshold)
        ap = nn_map(f0["desc"][s0], f1["desc"][s1], gt)
    return {"rep": rep, "nn_map": ap, "ms": ms, "n0": int(len(k0)), "n1": int(len(k1))}


def _summary(rows: Sequence[dict]) -> dict:
    out = {}
    for k in ("rep", "nn_map", "ms"):
        v = [r[k] for r in rows if r[k] is not None and not (isinstance(r[k], float) and math.isnan(r[k]))]
        out[k] = float(np.mean(v)) if v else math.nan
    out["keypoints"] = float(np.mean([(r["n0"] + r["n1"]) / 2 for r in rows])) if rows else 0.0
    out["pairs"] = len(rows)
    return out


# --------------------------------------------------------------------------- SIFT components
def _grey_u8(img: np.ndarray) -> np.ndarray:
    g = img.astype(np.float32).mean(-1) if img.ndim == 3 else img.astype(np.float32)
    if img.dtype != np.uint8:
        g = g * 255.0
    return np.clip(np.round(g), 0, 255).astype(np.uint8)


def sift_detect(grey: np.ndarray, top_k: int = 1000) -> dict:
    """OpenCV SIFT keypoints (strongest ``top_k``) with sigma, angle (radians, y down) and descriptor."""
    import cv2

    sift = cv2.SIFT_create()
    kps, desc = sift.detectAndCompute(grey, None)
    if not kps:
        return {"kpts": np.zeros((0, 2), np.float32), "scores": np.zeros(0, np.float32),
                "sigma": np.zeros(0, np.float32), "angle": np.zeros(0, np.float32), "desc": np.zeros((0, 128), np.float32)}
    resp = np.array([k.response for k in kps], np.float32)
    order = np.argsort(-resp, kind="stable")[:top_k]
    xy = np.array([k.pt for k in kps], np.float32)[order] - 0.25  # OpenCV's first octave offset
    return {"kpts": xy, "scores": resp[order], "sigma": np.array([k.size / 2 for k in kps], np.float32)[order],
            "angle": np.radians(np.array([k.angle for k in kps], np.float32))[order],
            "desc": _l2n(desc[order].astype(np.float32))}


def sift_describe(grey: np.ndarray, xy: np.ndarray, sigma: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """SIFT descriptors at given keypoints (size ``2 sigma``, angle in radians). Shape ``(N, 128)``."""
    import cv2

    if len(xy) == 0:
        return np.zeros((0, 128), np.float32)
    kps = [cv2.KeyPoint(float(x + 0.25), float(y + 0.25), float(2 * s), float(np.degrees(a) % 360.0))
           for (x, y), s, a in zip(xy, sigma, angle)]
    out, desc = cv2.SIFT_create().compute(grey, kps)
    if len(out) != len(kps):  # OpenCV drops none with provided keypoints, but be safe
        raise RuntimeError("cv2.SIFT.compute dropped keypoints")
    return _l2n(desc.astype(np.float32))


def sift_orientation(grey: np.ndarray, xy: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """SIFT's dominant orientation at given keypoints: gradients of the image blurred to
    ``sigma`` (nearest of 2^(k/3)), 36-bin histogram of ``atan2(Iy, Ix)`` (y down) weighted
    by magnitude and a Gaussian of ``1.5 sigma`` over radius ``4.5 sigma``, smoothed, peak
    refined by a parabola. Shape: ``(N,)`` radians."""
    import cv2

    img = grey.astype(np.float32) / 255.0
    out = np.zeros(len(xy), np.float32)
    if len(xy) == 0:
        return out
    lv = np.clip(np.round(3 * np.log2(np.maximum(sigma, 0.5))).astype(int), -3, 15)
    h, w = img.shape
    for k in np.unique(lv):
        s = 2.0 ** (k / 3)
        b = cv2.GaussianBlur(img, (0, 0), max(s, 0.3))
        gx = cv2.Sobel(b, cv2.CV_32F, 1, 0, ksize=1) / 2
        gy = cv2.Sobel(b, cv2.CV_32F, 0, 1, ksize=1) / 2
        mag, ang = np.hypot(gx, gy), np.arctan2(gy, gx)
        for i in np.flatnonzero(lv == k):
            sw = 1.5 * sigma[i]
            r = max(int(round(3 * sw)), 1)
            cx, cy = int(round(xy[i, 0])), int(round(xy[i, 1]))
            x0, x1, y0, y1 = max(cx - r, 0), min(cx + r + 1, w), max(cy - r, 0), min(cy + r + 1, h)
            if x0 >= x1 or y0 >= y1:
                continue
            yy, xx = np.mgrid[y0:y1, x0:x1]
            wgt = mag[y0:y1, x0:x1] * np.exp(-((xx - xy[i, 0]) ** 2 + (yy - xy[i, 1]) ** 2) / (2 * sw * sw))
            bins = np.floor((ang[y0:y1, x0:x1] + np.pi) / (2 * np.pi) * 36).astype(int) % 36
            hist = np.bincount(bins.ravel(), wgt.ravel(), 36)
            # SIFT's [1 4 6 4 1] / 16 circular smoothing
            hist = (np.roll(hist, 2) + np.roll(hist, -2) + 4 * (np.roll(hist, 1) + np.roll(hist, -1)) + 6 * hist) / 16
            j = int(np.argmax(hist))
            l_, c_, r_ = hist[(j - 1) % 36], hist[j], hist[(j + 1) % 36]
            den = l_ - 2 * c_ + r_
            off = 0.5 * (l_ - r_) / den if den != 0 else 0.0
            out[i] = (j + 0.5 + off) / 36 * 2 * np.pi - np.pi
    return out


def _l2n(d: np.ndarray) -> np.ndarray:
    return d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)


# --------------------------------------------------------------------------- component swaps
SWAPS = (  # (label, detector, orientation, descriptor) as in the paper's Table 3
    ("SIFT", "sift", "sift", "sift"),
    ("SIFT det + LIFT ori + LIFT desc", "sift", "lift", "lift"),
    ("SIFT det + SIFT ori + LIFT desc", "sift", "sift", "lift"),
    ("LIFT det + SIFT ori + SIFT desc", "lift", "sift", "sift"),
    ("LIFT det + LIFT ori + SIFT desc", "lift", "lift", "sift"),
    ("LIFT det + SIFT ori + LIFT desc", "lift", "sift", "lift"),
    ("LIFT", "lift", "lift", "lift"),
)


def swap_features(lift: Any, img: np.ndarray, max_keypoints: int = 1000, authors: Any = None) -> dict:
    """Features of every component combination for one image: ``{label: {"kpts", "scores", "desc"}}``."""
    grey = _grey_u8(img)
    g = torch.from_numpy(grey).float()[None, None] / 255.0
    sift = sift_detect(grey, max_keypoints)
    with torch.inference_mode():
        f = lift.extract(img)
    lf = {"kpts": f.keypoints.numpy(), "scores": f.keypoint_scores.numpy(), "sigma": (f.scales / 2).numpy(),
          "angle": f.orientations.numpy(), "desc": f.descriptors.numpy()}
    dets = {"sift": sift, "lift": lf}
    out = {}
    cache: dict = {}

    def lift_desc(det: str, angle: Optional[np.ndarray]):
        d = dets[det]
        with torch.inference_mode():
            a, desc = lift.describe(g, torch.from_numpy(d["kpts"]), torch.from_numpy(d["sigma"]),
                                    None if angle is None else torch.from_numpy(angle))
        return a.numpy(), _l2n(desc.numpy())

    for label, det, ori, dsc in SWAPS:
        d = dets[det]
        if ori == "sift":
            if "sift_ori_" + det not in cache:
                cache["sift_ori_" + det] = d["angle"] if det == "sift" else sift_orientation(grey, d["kpts"], d["sigma"])
            ang = cache["sift_ori_" + det]
        else:
            if "lift_ori_" + det not in cache:
                cache["lift_ori_" + det] = d["angle"] if det == "lift" else lift_desc(det, None)[0]
            ang = cache["lift_ori_" + det]
        if dsc == "sift":
            desc = d["desc"] if (det == "sift" and ori == "sift") else sift_describe(grey, d["kpts"], d["sigma"], ang)
        else:
            desc = d["desc"] if (det == "lift" and ori == "lift") else lift_desc(det, ang)[1]
        out[label] = {"kpts": d["kpts"], "scores": d["scores"], "desc": desc}
    if authors is not None:
        with torch.inference_mode():
            _, desc = authors.describe(g, torch.from_numpy(sift["kpts"]), torch.from_numpy(sift["sigma"]),
                                       torch.from_numpy(sift["angle"]))
        out["SIFT det + SIFT ori + authors' LIFT desc"] = {"kpts": sift["kpts"], "scores": sift["scores"],
                                                           "desc": _l2n(desc.numpy())}
    return out


# --------------------------------------------------------------------------- runner
def run(models: Sequence[str], data: Any, output: Any, *, max_keypoints: int = 1000, threshold: float = 3.0,
        swap: bool = False, lift_weights: Optional[str] = None, lift_descriptor_weights: Optional[str] = None,
        max_pairs: Optional[int] = None, progress: bool = True, command: Optional[str] = None,
        options: Optional[Sequence[str]] = None) -> dict:
    """Score every model (and, with ``swap``, LIFT's component swaps) on a homography root;
    write ``detdesc.json`` and ``detdesc.md`` to ``output``. Returns the report.

    ``options``: ``--set`` strings (``KEY=VALUE`` for every model, ``LABEL:KEY=VALUE`` for
    one; :func:`featmatch.eval.predict.model_overrides`); the swap table's LIFT takes those
    that apply to the label ``lift``."""
    from ..image import read_image
    from .predict import load_models, progress_bar

    if max_keypoints < 1:
        raise UsageError(f"--max-keypoints must be positive, got {max_keypoints}")
    pairs: list[HomographyPair] = homography_pairs(data)
    if max_pairs is not None:
        pairs = pairs[:max_pairs]
    loaded = load_models(list(models), max_keypoints=max_keypoints, options=options) if models else []
    lift = authors = None
    if swap:
        from ..registry import load
        from .predict import model_overrides

        lift_opts = model_overrides("lift", max_keypoints=max_keypoints, options=options)
        lift = load("lift", weights=lift_weights, **lift_opts)
        if lift_descriptor_weights:
            authors = load("lift", weights=lift_weights, descriptor_weights=lift_descriptor_weights, **lift_opts)
    rows: dict = {lm.name: [] for lm in loaded}
    swap_rows: dict = {}
    times: dict = {lm.name: [] for lm in loaded}
    memo: dict = {}
    for p in progress_bar(pairs, total=len(pairs), desc="detdesc", enabled=progress):
        imgs = [read_image(p.image0), read_image(p.image1)]
        sizes = [(im.shape[1], im.shape[0]) for im in imgs]
        for lm in loaded:
            feats = []
            for path, im in zip((p.image0, p.image1), imgs):
                key = (lm.name, str(path))
                if key not in memo:
                    t = time.perf_counter()
                    with torch.inference_mode():
                        f = lm.model.extract(im)
                    times[lm.name].append(time.perf_counter() - t)
                    desc = f.descriptors.cpu().numpy()
                    memo[key] = {"kpts": f.keypoints.cpu().numpy().astype(np.float64),
                                 "scores": f.keypoint_scores.cpu().numpy(), "desc": desc}
                feats.append(memo[key])
            rows[lm.name].append({"pair": p.key, **score_features(feats[0], feats[1], p.H_0to1, sizes[0], sizes[1],
                                                                 threshold, max_keypoints)})
        if swap:
            sf = []
            for path, im in zip((p.image0, p.image1), imgs):
                key = ("swap", str(path))
                if key not in memo:
                    memo[key] = swap_features(lift, im, max_keypoints, authors)
                sf.append(memo[key])
            for label in sf[0]:
                f0 = {k: (v.astype(np.float64) if k == "kpts" else v) for k, v in sf[0][label].items()}
                f1 = {k: (v.astype(np.float64) if k == "kpts" else v) for k, v in sf[1][label].items()}
                swap_rows.setdefault(label, []).append(
                    {"pair": p.key, **score_features(f0, f1, p.H_0to1, sizes[0], sizes[1], threshold, max_keypoints)})
        # keep the memo small: images of finished sequences are not needed again
        seq_paths = {str(p.image0), str(p.image1)}
        for key in [k for k in memo if k[1] not in seq_paths and Path(k[1]).parent != Path(p.image0).parent]:
            memo.pop(key)
    report = {
        "benchmark": "detdesc", "data": str(Path(data).name), "pairs": len(pairs), "command": command,
        "protocol": {"threshold_px": threshold, "max_keypoints": max_keypoints,
                     "metrics": "LIFT sec. 4.1: repeatability, NN mAP, matching score (featmatch.eval.metrics)"},
        "models": {name: {"summary": _summary(r), "sec_per_image": float(np.median(times[name])) if times[name] else None,
                          "pairs": r} for name, r in rows.items()},
        "swap": {label: {"summary": _summary(r), "pairs": r} for label, r in swap_rows.items()},
    }
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    from .report import _clean

    with atomic_path(out / "detdesc.json") as tmp:
        Path(tmp).write_text(json.dumps(_clean(report), indent=1))
    with atomic_path(out / "detdesc.md") as tmp:
        Path(tmp).write_text(markdown(report))
    report["outputs"] = {"json": str(out / "detdesc.json"), "markdown": str(out / "detdesc.md")}
    return report


def markdown(report: dict) -> str:
    """The two tables (models; component swaps) as markdown."""
    lines = [f"LIFT protocol on `{report['data']}` ({report['pairs']} pairs, <= {report['protocol']['max_keypoints']} "
             f"keypoints, {report['protocol']['threshold_px']:g} px)", ""]
    if report["command"]:
        lines += [f"`{report['command']}`", ""]

    def table(title, entries):
        out = [f"| {title} | Rep. | NN mAP | M. Score | keypoints |", "|---|---|---|---|---|"]
        for name, e in entries.items():
            s = e["summary"]
            out.append(f"| {name} | {s['rep']:.3f} | {s['nn_map']:.3f} | {s['ms']:.3f} | {s['keypoints']:.0f} |")
        return out

    if report["models"]:
        lines += table("model", report["models"]) + [""]
    if report["swap"]:
        lines += table("detector + orientation + descriptor", report["swap"]) + [""]
    return "\n".join(lines)
