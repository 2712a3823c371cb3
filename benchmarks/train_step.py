"""Time one training step (loss, backward, AdamW update) of a featmatch recipe under the
speed options of the trainer: float32 vs bfloat16 autocast, channels-last, torch.compile,
thread count. Variants are interleaved (round-robin, median of the rounds) so machine load
hits them alike; the load average is printed with the table. The process CPU time per step
is reported too: with one thread on a shared machine it is close to the step time the same
variant would take on an idle core.

    python benchmarks/train_step.py loftr --images PHOTOS --threads 1 --rounds 4 --steps 3
    python benchmarks/train_step.py xfeat --images PHOTOS --teacher fast --threads 1

The batch is fixed (synthetic pairs of PHOTOS with the training CLI's augmentation), the
model is built as ``featmatch train`` builds it (loftr: the loftr.tiny preset, xfeat: XFeatNet).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch


def build(method: str, teacher: str):
    if method == "loftr":
        from featmatch.models.loftr import TINY, LoFTR, LoFTRConfig
        from featmatch.train.recipes.loftr import LoFTRRecipe, LoFTRRecipeConfig

        return LoFTR(LoFTRConfig(**TINY)), LoFTRRecipe(LoFTRRecipeConfig())
    from featmatch.models.xfeat import XFeatNet
    from featmatch.train.recipes.xfeat import XFeatRecipe, XFeatRecipeConfig

    return XFeatNet(), XFeatRecipe(XFeatRecipeConfig(teacher=teacher))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("method", choices=("loftr", "xfeat"))
    ap.add_argument("--images", required=True)
    ap.add_argument("--size", default="320x256")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--teacher", default="fast")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per variant and round")
    ap.add_argument("--variants", default="fp32,bf16,fp32+cl,bf16+cl",
                    help="comma list of fp32|bf16 with optional +cl (channels-last) and +compile")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from featmatch.data import SyntheticConfig, SyntheticPairs
    from featmatch.train.trainer import AutocastModel

    w, h = (int(v) for v in args.size.split("x"))
    ds = SyntheticPairs(args.images, SyntheticConfig(size=(w, h), seed=0, max_rotation_deg=180.0, jpeg_prob=0.3))
    items = [ds[i] for i in range(args.batch_size)]
    batch = {k: torch.stack([it[k] for it in items]) for k in items[0]}

    runners = {}
    for v in args.variants.split(","):
        parts = set(v.split("+"))
        torch.manual_seed(0)
        net, recipe = build(args.method, args.teacher)
        net.train()
        if "cl" in parts:
            net = net.to(memory_format=torch.channels_last)
        inner = torch.compile(net) if "compile" in parts else net
        model = AutocastModel(inner, net, "cpu", enabled="bf16" in parts, channels_last="cl" in parts)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
        runners[v] = (model, recipe, opt, net)

    def step(v):
        model, recipe, opt, net = runners[v]
        loss, _ = recipe.loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        return float(loss.detach())

    first = {}
    for v in runners:  # warm-up (and compilation): not timed in the table, reported apart
        t = time.perf_counter()
        first[v] = step(v)
        first[v] = (first[v], time.perf_counter() - t)
    times = {v: [] for v in runners}
    cpu = {v: [] for v in runners}
    for _ in range(args.rounds):
        for v in runners:
            t, c = time.perf_counter(), time.process_time()
            for _ in range(args.steps):
                step(v)
            times[v].append((time.perf_counter() - t) / args.steps)
            cpu[v].append((time.process_time() - c) / args.steps)
    base = statistics.median(times[next(iter(runners))])
    load = os.getloadavg()
    print(f"{args.method} {w}x{h} batch {args.batch_size} threads {args.threads} teacher {args.teacher if args.method == 'xfeat' else '-'}; "
          f"load average {load[0]:.1f} {load[1]:.1f}; torch {torch.__version__}")
    print("| variant | s/step (median) | min | vs first | CPU s/step (median) | CPU vs first | first step s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    cbase = statistics.median(cpu[next(iter(runners))])
    rows = []
    for v, ts in times.items():
        med = statistics.median(ts)
        cmed = statistics.median(cpu[v])
        rows.append({"variant": v, "median_s": med, "min_s": min(ts), "speedup": base / med, "cpu_s": cmed,
                     "cpu_speedup": cbase / cmed, "first_s": first[v][1], "first_loss": first[v][0]})
        print(f"| {v} | {med:.3f} | {min(ts):.3f} | {base / med:.2f}x | {cmed:.3f} | {cbase / cmed:.2f}x | {first[v][1]:.1f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "load": load, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
