"""Plot training curves (loss parts and held-out MMA) from one or more run folders.

    python benchmarks/plot_training.py RUN_DIR [RUN_DIR ...] --out docs/training_xfeat.png

Works for any featmatch training run (XFeat and LoFTR logs).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def read(run: Path) -> tuple[list, list]:
    steps, vals = [], []
    for line in (run / "log.jsonl").read_text().splitlines():
        r = json.loads(line)
        if "val" in r:
            vals.append(r)
        elif "loss" in r:  # training steps; skips the end-of-run summary line
            steps.append(r)
    # a resumed run logs the steps after its last checkpoint again: keep the last record per step
    steps = list({r["step"]: r for r in steps}.values())
    vals = list({r["step"]: r for r in vals}.values())
    return sorted(steps, key=lambda r: r["step"]), sorted(vals, key=lambda r: r["step"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from featmatch.io import atomic_path

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for run in map(Path, args.runs):
        steps, vals = read(run)
        x = [r["step"] for r in steps]
        axes[0].plot(x, [r["loss"] for r in steps], label=run.name)
        parts = (("loss_descriptors", "-"), ("loss_coarse", "-"), ("loss_fine", "--"), ("loss_keypoints", ":"))
        for part, style in parts:  # XFeat: descriptors, fine, keypoints; LoFTR: coarse, fine
            if any(part in r for r in steps):
                axes[1].plot(x, [r.get(part, float("nan")) for r in steps], style, label=f"{run.name}: {part[5:]}")
        axes[2].plot([r["step"] for r in vals], [100 * r["val"].get("mma@3", float("nan")) for r in vals], "o-",
                     label=run.name)
    axes[0].set_title("total loss")
    axes[1].set_title("loss parts")
    axes[2].set_title("held-out synthetic pairs: MMA@3 (%)")
    for ax in axes:
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(args.out) as tmp:
        fig.savefig(tmp, dpi=80)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
