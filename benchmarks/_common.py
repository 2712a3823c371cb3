"""Helpers shared by the benchmark scripts (run as ``python benchmarks/bench_*.py``, so this
module is importable as ``_common``)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import cv2
import torch


def load_images(folder: Path, n: int, size=(640, 480)) -> list[torch.Tensor]:
    """The first ``n`` photos of ``folder`` (name order), resized (INTER_AREA) to ``size``
    (W, H), as RGB float ``(1, 3, H, W)`` tensors in [0, 1]."""
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))[:n]
    if len(files) < n:
        raise SystemExit(f"{folder}: need {n} images, found {len(files)}")
    out = []
    for p in files:
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)[..., ::-1]
        img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
        out.append(torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float() / 255.0)
    return out


def status_mb(field: str) -> float:
    """``VmRSS`` / ``VmHWM`` of this process from /proc (Linux), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1]) / 1024.0
    raise KeyError(field)


def memory_runs(commands: dict) -> dict:
    """Run each memory-worker command (``{name: argv}``) in its own process and collect the
    JSON object each prints last; failures are reported and skipped."""
    res = {}
    for name, cmd in commands.items():
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            print(f"(memory run of {name} failed: {out.stderr.strip().splitlines()[-1:]})")
            continue
        res[name] = json.loads(out.stdout.strip().splitlines()[-1])
    return res
