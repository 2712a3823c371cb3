"""Compare the loss curves of training runs (e.g. float32 vs bfloat16 autocast, same seed):
window means of every logged loss component, the relative difference to the first run, and
the mean seconds per step.

    python benchmarks/compare_runs.py RUN_FP32 RUN_BF16 --window 20
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def read(run: Path) -> list:
    return [r for r in (json.loads(l) for l in (run / "log.jsonl").read_text().splitlines() if l.strip())
            if "loss" in r]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--window", type=int, default=20, help="steps per window")
    ap.add_argument("--keys", default="loss", help="comma list of logged values to compare")
    args = ap.parse_args()
    logs = {r: read(r) for r in args.runs}
    keys = args.keys.split(",")
    last = min(max(x["step"] for x in lg) for lg in logs.values())
    windows = [(s, min(s + args.window, last)) for s in range(0, last, args.window)]
    names = [r.name for r in args.runs]
    print("| steps | value | " + " | ".join(names) + " | " + " | ".join(f"{n} vs {names[0]}" for n in names[1:]) + " |")
    print("|---|---|" + "---:|" * (2 * len(names) - 1))
    for k in keys:
        for a, b in windows:
            means = []
            for lg in logs.values():
                vals = [x[k] for x in lg if a < x["step"] <= b and k in x]
                means.append(sum(vals) / len(vals) if vals else float("nan"))
            rel = [f"{100 * (m - means[0]) / abs(means[0]):+.1f}%" for m in means[1:]]
            print(f"| {a + 1}-{b} | {k} | " + " | ".join(f"{m:.4f}" for m in means) + " | " + " | ".join(rel) + " |")
    for r, lg in logs.items():
        sps = [x["sec_per_step"] for x in lg if "sec_per_step" in x]
        print(f"{r.name}: {len(lg)} logged steps up to {max(x['step'] for x in lg)}, mean {sum(sps) / len(sps):.2f} s/step")


if __name__ == "__main__":
    main()
