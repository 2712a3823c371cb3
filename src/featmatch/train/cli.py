"""``featmatch train METHOD``: command-line front end of the trainer."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

from ..cli import register_command
from ..errors import UsageError

log = logging.getLogger(__name__)


class MixedPairs(torch.utils.data.Dataset):
    """Whole batches from depth pairs (share ``depth_share``) or synthetic pairs, chosen by
    the step (``index // batch_size``) so every batch has one kind of ground truth."""

    def __init__(self, synthetic, depth, batch_size: int, depth_share: float = 0.6, seed: int = 0):
        self.synthetic, self.depth, self.b, self.share, self.seed = synthetic, depth, batch_size, depth_share, seed

    def __len__(self) -> int:
        return len(self.synthetic)

    def __getitem__(self, index: int) -> dict:
        step = index // self.b
        if (step * 7919 % 100) < self.share * 100:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + index // len(self.depth))
            perm = torch.randperm(len(self.depth), generator=g)
            return self.depth[int(perm[index % len(self.depth)])]
        return self.synthetic[index]


def _add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("method", choices=("xfeat", "loftr", "drcnet", "lift"),
                   help="what to train (loftr: the loftr.tiny preset; drcnet: a light preset, see --backbone; "
                        "lift: one stage, see --stage)")
    p.add_argument("--images", required=True, help="folder of photos for synthetic homography pairs "
                   "(lift: or a patch set .npz)")
    p.add_argument("--pairs", default=None, help="depth-pairs root (pairs.json with depth, K, T_0to1) mixed in at 60%%")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--out", required=True, help="run folder (checkpoints, log.jsonl, model.pt)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out at its last step")
    p.add_argument("--init", choices=("scratch", "official"), default="scratch",
                   help="official: start from the released weights (xfeat: the authors'; loftr: the shipped "
                        "loftr.tiny checkpoint, i.e. fine-tune it); loftr: see also --start")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--size", default="320x256", help="training image size WxH (multiples of 32)")
    p.add_argument("--teacher", default="aliked.t16", help="xfeat: keypoint teacher, a featmatch model name or 'fast'")
    p.add_argument("--backbone", default="xfeat", help="drcnet: frozen official backbone (xfeat or aliked-t16)")
    p.add_argument("--coarse-loss", choices=("focal", "nll"), default="focal", help="loftr: coarse loss")
    p.add_argument("--val-every", type=int, default=500)
    p.add_argument("--ckpt-every", type=int, default=250)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--amp", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-pose", default=None,
                   help="xfeat: real pose pairs (the `featmatch eval pose` layout) validated too (pose_auc@5/10/20, "
                        "pose_precision); e.g. --keep-best pose_auc@10")
    p.add_argument("--keep-best", default="auto",
                   help="validation metric (e.g. mma@3) whose best weights, start included, go to RUN/best.pt; "
                        "'none' to turn off (auto, with --init official: pose_precision with --val-pose, else "
                        "mma@3; otherwise none)")
    p.add_argument("--freeze-bn", choices=("auto", "yes", "no"), default="auto",
                   help="keep BatchNorm statistics fixed (auto: yes with --init official)")
    # corpus data and CPU speed (docs/training.md, "Training on a photo corpus")
    p.add_argument("--val-split", default="0.1",
                   help="share of the photos held out for validation, by file, seeded by --split-seed "
                        "(written to RUN/split.json, reused on --resume); 'tenth': every tenth file (older runs)")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--val-pairs", type=int, default=24, help="held-out synthetic pairs per validation")
    p.add_argument("--rotation", type=float, default=25.0, help="in-plane rotation augmentation, +/- degrees (<= 180)")
    p.add_argument("--jpeg", type=float, default=0.0, help="probability of JPEG re-encoding per image (quality 30-95)")
    p.add_argument("--scale", default="0.75,1.3",
                   help="isotropic scale range MIN,MAX of image 1 w.r.t. image 0 (log-uniform)")
    p.add_argument("--perspective", type=float, default=0.12,
                   help="perspective corner jitter, fraction of the image size (+/-, < 0.5)")
    from ..data.synthetic import APPEARANCE_PRESETS

    p.add_argument("--appearance", choices=tuple(APPEARANCE_PRESETS), default="standard",
                   help="photometric augmentation preset: standard (contrast, brightness, gamma, blur, noise) or "
                        "strong (wider tone changes, colour casts, soft shadows; docs/training.md)")
    p.add_argument("--threads", type=int, default=None, help="torch threads of the training process (default: torch's)")
    p.add_argument("--channels-last", action="store_true", help="channels-last memory format for the network")
    p.add_argument("--log-every", type=int, default=10, help="log period in steps")
    from .recipes.lift import add_arguments as add_lift_arguments

    add_lift_arguments(p)


def _parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"--size must look like 320x256, got '{text}'") from None
    if w % 32 or h % 32 or w < 64 or h < 64:
        raise UsageError(f"--size must be multiples of 32 and at least 64x64, got {w}x{h}")
    return w, h


def _parse_scale(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in str(text).split(","))
    except ValueError:
        raise UsageError(f"--scale must look like 0.75,1.3 (MIN,MAX), got '{text}'") from None
    if not 0.1 <= lo <= hi <= 10:  # NaN fails too
        raise UsageError(f"--scale needs 0.1 <= MIN <= MAX <= 10, got {lo},{hi}")
    return lo, hi


#: methods whose --start weights are fine-tuned like --init official (keep-best on, not both)
FINETUNE_START = ("loftr", "xfeat")


def _check_start(args: argparse.Namespace) -> None:
    """--start FILE: the file must exist; loftr and xfeat: not with --init official."""
    start = getattr(args, "start", None)
    if not start:
        return
    if not Path(start).is_file():
        raise UsageError(f"--start: weights file not found: {start}")
    if args.method in FINETUNE_START and args.init == "official":
        what = "the shipped loftr.tiny" if args.method == "loftr" else "the authors' XFeat weights"
        raise UsageError(f"give --init official ({what}) or --start FILE, not both")


def _datasets(args: argparse.Namespace, size: tuple[int, int]):
    """Training pairs (synthetic, optionally mixed with depth pairs) and held-out synthetic
    pairs from a fixed split of the photos by file (RUN/split.json, reused on --resume)."""
    from ..data import SyntheticConfig, SyntheticPairs, appearance_preset, list_images, read_split, split_files, write_split
    from ..data.depth_pairs import DepthPairs
    from ..data.split import SPLIT_FILE, parse_val_split

    rule = parse_val_split(args.val_split)
    if not 0 <= args.rotation <= 180:
        raise UsageError(f"--rotation must be in [0, 180] degrees, got {args.rotation}")
    if not 0 <= args.jpeg <= 1:
        raise UsageError(f"--jpeg is a probability in [0, 1], got {args.jpeg}")
    if args.val_pairs < 1:
        raise UsageError(f"--val-pairs must be at least 1, got {args.val_pairs}")
    scale = _parse_scale(args.scale)
    if not 0 <= args.perspective < 0.5:
        raise UsageError(f"--perspective must be in [0, 0.5), got {args.perspective}")
    root = Path(args.images)
    split_path = Path(args.out) / SPLIT_FILE
    if args.resume and split_path.exists():
        list_images(root)  # the folder must still be there
        train_files, val_files = read_split(split_path, root)
    else:
        train_files, val_files = split_files(list_images(root), root, rule, args.split_seed)
        write_split(split_path, root, train_files, val_files, rule, args.split_seed)
    appearance = getattr(args, "appearance", "standard")
    aug = {"max_rotation_deg": float(args.rotation), "jpeg_prob": float(args.jpeg), "scale_range": scale,
           "perspective": float(args.perspective), **appearance_preset(appearance)}
    train = SyntheticPairs(train_files, SyntheticConfig(size=size, seed=args.seed, **aug))
    val = SyntheticPairs(val_files, SyntheticConfig(size=size, seed=args.seed + 1_000_003, **aug))
    if args.pairs:
        train = MixedPairs(train, DepthPairs(args.pairs, size=size), args.batch_size, seed=args.seed)
    meta = {"images": str(root.name), "train_images": len(train_files), "val_images": len(val_files),
            "val_split": rule, "split_seed": args.split_seed, "rotation": float(args.rotation), "jpeg": float(args.jpeg),
            "scale": list(scale), "perspective": float(args.perspective),
            "appearance": appearance,
            "size": list(size), "init": args.init, "pairs": bool(args.pairs)}
    return train, val, meta


def _train_config(args: argparse.Namespace, freeze_bn: bool):
    from .trainer import TrainConfig

    auto = None
    # fine-tuning (--init official, --start FILE): never end worse than the start on the validation
    if args.init == "official" or (args.method in FINETUNE_START and getattr(args, "start", None)):
        auto = "pose_precision" if getattr(args, "val_pose", None) else "mma@3"
    keep_best = {"auto": auto, "none": None}.get(args.keep_best, args.keep_best)
    return TrainConfig(keep_best=keep_best, steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup_steps=args.warmup,
                       grad_clip=args.grad_clip, val_every=args.val_every, ckpt_every=args.ckpt_every,
                       log_every=max(1, args.log_every),
                       num_workers=args.workers, device=args.device, amp=args.amp, seed=args.seed,
                       freeze_bn=freeze_bn, channels_last=args.channels_last)


def build_loftr_run(args: argparse.Namespace):
    """Trainer of the ``loftr.tiny`` preset from random weights."""
    from ..models.loftr import TINY, LoFTR, LoFTRConfig
    from .recipes.loftr import LoFTRRecipe, LoFTRRecipeConfig
    from .trainer import Trainer

    size = _parse_size(args.size)
    train, val, meta = _datasets(args, size)
    torch.manual_seed(args.seed)
    # the loftr.tiny architecture (TINY) without its inference defaults (TINY_INFERENCE):
    # validation matches the training-size images as they are
    net = LoFTR(LoFTRConfig(**TINY))
    start = getattr(args, "start", None)
    if (args.init == "official" or start) and not args.resume:  # fine-tune the shipped (or a given) checkpoint
        from .. import load

        net.load_state_dict(load("loftr.tiny", weights=start or None).state_dict(), strict=True)
    recipe = LoFTRRecipe(LoFTRRecipeConfig(coarse_loss=args.coarse_loss, val_pairs=args.val_pairs), val_set=val)
    meta.update({"method": "loftr", "model": "loftr.tiny", "coarse_loss": args.coarse_loss,
                 "start": Path(start).name if start else None})
    return Trainer(net, recipe, train, args.out, _train_config(args, args.freeze_bn == "yes"), extra_state=meta)


def build_xfeat_run(args: argparse.Namespace):
    from ..models.xfeat import XFeatNet
    from .recipes.xfeat import XFeatRecipe, XFeatRecipeConfig
    from .trainer import Trainer

    size = _parse_size(args.size)
    train, val, meta = _datasets(args, size)
    torch.manual_seed(args.seed)
    net = XFeatNet()
    start = getattr(args, "start", None)
    if start and not args.resume:  # continue from featmatch XFeat weights (e.g. a run's model.pt at a new --size)
        from .. import load

        net.load_state_dict(load("xfeat", weights=start).net.state_dict(), strict=True)
    elif args.init == "official" and not args.resume:
        from .. import hub
        from ..registry import model_card, weights_path

        path = weights_path("xfeat")
        state = hub.read_state_dict(path, origin=hub.origin(model_card("xfeat").weights, path), name="xfeat")
        from ..models.xfeat import remap_official

        net.load_state_dict(remap_official(state), strict=True)
    cfg = _train_config(args, args.freeze_bn == "yes" or (args.freeze_bn == "auto" and args.init == "official"))
    val_pose = None
    if args.val_pose:
        from ..eval.data import pose_pairs

        val_pose = pose_pairs(args.val_pose)
    recipe = XFeatRecipe(XFeatRecipeConfig(teacher=args.teacher, val_pairs=args.val_pairs), val_set=val,
                         val_pose=val_pose)
    meta.update({"method": "xfeat", "teacher": args.teacher, "val_pose": bool(args.val_pose),
                 "start": Path(start).name if start else None})
    return Trainer(net, recipe, train, args.out, cfg, extra_state=meta)


def _run(args: argparse.Namespace) -> int:
    if args.steps < 1:
        raise UsageError("--steps must be at least 1")
    _check_start(args)
    out = Path(args.out)
    if not args.resume and (out / "last.pt").exists():
        raise UsageError(f"{out} already holds a run; pass --resume or choose another --out")
    if args.threads is not None:
        if args.threads < 1:
            raise UsageError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.method == "drcnet":
        from .recipes.drcnet import build_drcnet_run

        args.size_wh = _parse_size(args.size)
        trainer = build_drcnet_run(args, _datasets(args, args.size_wh), _train_config(args, True))
    elif args.method == "lift":
        from .recipes.lift import build_run as build_lift_run

        trainer = build_lift_run(args)
    else:
        trainer = build_loftr_run(args) if args.method == "loftr" else build_xfeat_run(args)
    val = trainer.fit(resume=args.resume)
    result = {"step": trainer.step, "val": val, "weights": str(out / "model.pt")}
    if trainer.best is not None:
        result.update(best=trainer.best, best_weights=str(out / "best.pt"))
    print(json.dumps(result))
    return 0


register_command("train", "train a method (synthetic homography pairs, optional depth pairs)", _add_args, _run)
