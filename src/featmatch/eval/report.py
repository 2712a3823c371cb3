"""Benchmark reports: JSON summary, markdown tables, PNG plots (matplotlib imported lazily).

The JSON records, per model, its card, full config, weights sha256, config hash and cache
file, the summary per split / subset and every pair's numbers; at the top level the
protocol (estimator, thresholds, image size), the data root, the number of pairs and the
featmatch version. Non-finite numbers (failed estimations) are written as ``null``.
Nothing time-dependent is stored apart from the measured matching times, so two runs
from the same cache give identical files.
"""

from __future__ import annotations

import json
import math
import platform
from pathlib import Path
from typing import Any, Optional, Sequence

from ..io import atomic_path


def _clean(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if hasattr(x, "item") and getattr(x, "ndim", 1) == 0:
        return _clean(x.item())
    if hasattr(x, "tolist"):
        return _clean(x.tolist())
    return x


def model_entry(lm: Any, cache_file: Path, summary: dict, rows: Sequence[dict]) -> dict:
    card = getattr(lm.model, "card", None)
    return {
        "model": lm.name,
        "kind": getattr(card, "kind", None),
        "code_license": getattr(card, "code_license", None),
        "weights_origin": getattr(card, "weights_origin", None),
        "weights_sha256": lm.weights_sha256,
        "config": lm.identity["config"],
        "config_hash": cache_file.stem.rsplit("-", 1)[-1],
        "cache_file": cache_file.name,
        "summary": summary,
        "pairs": list(rows),
    }


def build_report(benchmark: str, data: Any, pairs: Sequence[Any], results: dict, protocol: dict,
                 command: Optional[str] = None) -> dict:
    from .. import __version__

    try:
        import cv2

        cv_version = cv2.__version__
    except ImportError:  # pragma: no cover
        cv_version = None
    import torch

    return _clean({
        "benchmark": benchmark,
        "featmatch_version": __version__,
        "data_root": str(Path(data).resolve()),
        "num_pairs": len(pairs),
        "image_size": (f"long side {protocol['resize_long_side']} px" if protocol.get("resize_long_side")
                       else "original"),
        "protocol": protocol,
        "command": command,
        "environment": {"python": platform.python_version(), "torch": torch.__version__, "opencv": cv_version},
        "models": results,
    })


def _pct(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{100 * v:.1f}"


def _num(v: Any, fmt: str = "{:.0f}") -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else fmt.format(v)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def homography_table(report: dict, split: str = "all") -> str:
    header = ["model", "MHA@1", "MHA@3", "MHA@5", "MHA@7", "MHA@10", "AUC@3", "AUC@5", "AUC@10",
              "MMA@1", "MMA@3", "MMA@5", "keypoints", "matches", "inliers", "s/pair"]
    rows = []
    for name, m in report["models"].items():
        s = m["summary"].get(split)
        if s is None:
            continue
        rows.append([f"`{name}`"] + [_pct(s["mha"][t]) for t in ("1", "3", "5", "7", "10")]
                    + [_pct(s["auc"][t]) for t in ("3", "5", "10")]
                    + [_pct(s["mma"][t]) for t in ("1", "3", "5")]
                    + [_num(s["mean_keypoints"]), _num(s["mean_matches"]), _num(s["mean_inliers"]),
                       _num(s["mean_time_s"], "{:.2f}")])
    return _table(header, rows)


def pose_table(report: dict, subset: str = "all") -> str:
    header = ["model", "AUC@5", "AUC@10", "AUC@20", "Acc@10", "P (5e-4)", "P (Sampson 1px)", "MIR",
              "keypoints", "matches", "inliers", "s/pair"]
    rows = []
    for name, m in report["models"].items():
        s = m["summary"].get(subset)
        if s is None:
            continue
        rows.append([f"`{name}`"] + [_pct(s["auc"][t]) for t in ("5", "10", "20")]
                    + [_pct(s["acc10"]), _pct(s["precision_normalized"]), _pct(s["precision_sampson"]),
                       _pct(s["mean_inlier_ratio"]), _num(s["mean_keypoints"]), _num(s["mean_matches"]),
                       _num(s["mean_inliers"]), _num(s["mean_time_s"], "{:.2f}")])
    return _table(header, rows)


def sequence_table(report: dict, threshold: float = 3.0, max_rows: int = 60) -> str:
    """Homography: pairs with corner error <= ``threshold`` px per sequence and model
    (``""`` when there are more than ``max_rows`` sequences)."""
    models = report["models"]
    first = next(iter(models.values()), None)
    if first is None:
        return ""
    seqs: list = []
    for r in first["pairs"]:
        if r["sequence"] not in seqs:
            seqs.append(r["sequence"])
    if len(seqs) > max_rows:
        return ""
    rows = []
    for q in seqs:
        row = [q]
        for m in models.values():
            rs = [r for r in m["pairs"] if r["sequence"] == q]
            ok = sum(1 for r in rs if r["corner_error"] is not None and r["corner_error"] <= threshold)
            row.append(f"{ok}/{len(rs)}")
        rows.append(row)
    return _table(["sequence"] + [f"`{n}`" for n in models], rows)


def markdown(report: dict) -> str:
    bench = report["benchmark"]
    first = next(iter(report["models"].values()), None)
    groups = list(first["summary"]) if first else ["all"]
    p = report["protocol"]
    est = p["estimator"]
    lines = [f"# featmatch eval {bench}", "",
             f"Data: `{report['data_root']}` ({report['num_pairs']} pairs); image size: {report['image_size']}; "
             f"featmatch {report['featmatch_version']}.", ""]
    if bench == "homography":
        name = f"OpenCV findHomography {est['method']}" if est["name"] != "poselib" else "poselib LO-RANSAC"
        lines.append(f"Estimator: {name}, threshold {est['threshold_px']} px, seed 0. "
                     "MHA@t / AUC@t: corner error <= t px (% of pairs) / error AUC; MMA@t: matches within t px "
                     "(% of all matches, mean over pairs). All numbers in %.")
        table = homography_table
    else:
        name = f"OpenCV {est.get('method')}" if est["name"] == "opencv" else "poselib LO-RANSAC"
        lines.append(f"Estimator: {name}, threshold {est['threshold_px']} px, seed 0. AUC@t: pose error "
                     "max(R, t) AUC up to t degrees; P: epipolar precision of all matches; MIR: mean inlier ratio. "
                     "All numbers in %.")
        table = pose_table
    if report.get("command"):
        lines += ["", f"Command: `{report['command']}`"]
    for g in groups:
        lines += ["", f"## {g}" if len(groups) > 1 else "", table(report, g)]
    if bench == "homography":
        seq = sequence_table(report)
        if seq:
            lines += ["", "Pairs with corner error <= 3 px, per sequence:", "", seq]
    return "\n".join(x for x in lines if x is not None).replace("\n\n\n", "\n\n") + "\n"


def save_plot(report: dict, path: Path) -> Optional[Path]:
    """MMA vs threshold (homography) or cumulative pose-error curve (pose), one panel per
    split / subset. Returns the path, or ``None`` when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    models = report["models"]
    first = next(iter(models.values()), None)
    if first is None:
        return None
    groups = list(first["summary"])
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.6), squeeze=False)
    for ax, g in zip(axes[0], groups):
        for name, m in models.items():
            if report["benchmark"] == "homography":
                mma = m["summary"][g]["mma"]
                ts = [int(t) for t in mma]
                ax.plot(ts, [100 * (mma[str(t)] or 0.0) for t in ts], marker="o", ms=3, label=name)
            else:
                errs = sorted(r["error_deg"] for r in m["pairs"] if (g == "all" or r["subset"] == g)
                              and r["error_deg"] is not None)
                n = sum(1 for r in m["pairs"] if g == "all" or r["subset"] == g)
                xs = [0.0] + [e for e in errs if e <= 20] + [20.0]
                ys = [0.0] + [100 * (i + 1) / n for i, e in enumerate(errs) if e <= 20]
                ys.append(ys[-1])
                ax.step(xs, ys, where="post", label=name)
        if report["benchmark"] == "homography":
            ax.set_xlabel("threshold (px)")
            ax.set_ylabel("MMA (%)")
        else:
            ax.set_xlabel("pose error max(R, t) (deg)")
            ax.set_ylabel("pairs (%)")
        ax.set_ylim(0, 100)
        ax.set_title(f"{report['benchmark']}: {g} ({first['summary'][g]['pairs']} pairs)")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return path


def write_report(report: dict, out_dir: Path, *, plot: bool = True, stem: Optional[str] = None) -> dict:
    """Write ``<stem>.json``, ``<stem>.md`` and ``<stem>.png`` atomically (stem: the
    benchmark name by default); returns ``{"json": path, "markdown": path[, "png": path]}``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    bench = stem or report["benchmark"]
    paths = {"json": out_dir / f"{bench}.json", "markdown": out_dir / f"{bench}.md"}
    with atomic_path(paths["json"]) as tmp:
        tmp.write_text(json.dumps(report, indent=1, allow_nan=False) + "\n")
    with atomic_path(paths["markdown"]) as tmp:
        tmp.write_text(markdown(report))
    if plot:
        png = save_plot(report, out_dir / f"{bench}.png")
        if png is not None:
            paths["png"] = png
    return paths


__all__ = ["build_report", "model_entry", "write_report", "markdown", "homography_table", "pose_table", "sequence_table", "save_plot"]
