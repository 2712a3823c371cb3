"""Training LIFT in the paper's stages (Yi et al. ECCV 2016, section 4.1).

``featmatch train lift --stage desc|ori|det`` trains one :class:`~featmatch.models.lift.LIFTNet`
part on quadruplets of 128x128 patches (:mod:`featmatch.data.lift_patches`), the others frozen:

1. ``desc``: DESC on crops at the known keypoints rotated by the (mapped) SIFT orientations;
   hinge embedding loss, margin 4, balanced positive / negative pairs, progressive hard
   mining (ratio 1, doubled every ``mining_every`` steps up to ``mining_max``: the batch holds
   ``pairs * mining_max`` candidates, the first ``pairs * ratio`` are ranked without gradients
   and the hardest ``pairs`` positives and negatives are back-propagated). With
   ``negatives="batch"`` (featmatch's option, ``--negatives batch``) each patch's negative is
   instead its hardest one among all the batch's other patches
   (:func:`~featmatch.train.losses.lift.descriptor_batch_hinge_loss`; no mining schedule).
2. ``ori``: ORI on crops at the known keypoints; loss = distance of the DESC descriptors
   (DESC fixed) of the crops rotated by the predicted orientations, after
   ``ori_pretrain_steps`` of warm-up regressing the data's SIFT orientations (featmatch's
   addition: the paper's loss alone did not move a randomly initialised ORI in 200 steps
   on rotations up to 180 degrees).
3. ``det``: DET on the whole patches (softargmax); loss = ``gamma`` x classification (P1..P3
   features, P4 not) + pair term: eq. 11 overlap for the first ``det_pretrain_steps`` steps
   (pre-training), then the descriptor distance through Crop -> ORI -> Rot -> DESC (ORI and
   DESC fixed).

``--support-scale S`` (featmatch's option; the paper: 1) widens the ORI / DESC crops of every
stage to 12 sigma x S of the patch (the shipped checkpoint: 1.4; ``scripts/export_lift.py``
records S in the weight file and the runtime uses it).

Validation on held-out quadruplets: ``auc`` (ROC area of positive vs negative descriptor
distances), ``fpr95``; for ``ori`` also the relative-orientation error; for ``det`` the
classification accuracy and the crops' IoU. ``neg_dist`` = minus the mean positive
descriptor distance through the stage's pipeline; ``nn_acc`` = share of the P1 whose nearest
descriptor among all P2 and P3 of the validated quadruplets is their own P2 (the ranking task
of real matching, which the pairwise AUC does not measure).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ...errors import UsageError
from ...models.lift import CROP_SCALE, LIFTNet, crop_patch
from ..losses.lift import (classification_loss, descriptor_batch_hinge_loss, descriptor_hinge_loss, mining_ratio,
                           orientation_loss, orientation_regression_loss, overlap_loss)

STAGES = ("desc", "ori", "det")
NEGATIVES = ("pairs", "batch")


@dataclass(frozen=True)
class LIFTRecipeConfig:
    """Options of the staged LIFT recipe."""

    stage: str = "desc"  # desc | ori | det
    pairs: int = 64  # positive (and negative) pairs back-propagated per step
    margin: float = 4.0  # hinge margin C of the descriptor loss
    mining_every: int = 5000  # desc: the mining ratio doubles every this many steps (paper 5000)
    mining_max: float = 4.0  # desc: largest mining ratio
    det_pretrain_steps: int = 0  # det: steps with the eq. 11 overlap pair term before the full loss
    ori_pretrain_steps: int = 0  # ori: steps regressing the SIFT orientations before the paper's loss
    gamma: float = 1.0  # det: weight of the classification loss
    negatives: str = "pairs"  # desc: "pairs" (the paper's P1-P3 pairs, mined) | "batch" (hardest in the batch)
    val_quads: int = 400  # held-out quadruplets per validation
    #: ORI / DESC crops cover 12 sigma x this (the paper: 1); the runtime reads it from the
    #: exported weight file (``LIFTConfig.support_scale=None``)
    support_scale: float = 1.0


def _auc(pos: np.ndarray, neg: np.ndarray) -> tuple[float, float]:
    """ROC area (a positive distance below a negative one) and FPR at 95 % recall."""
    d = np.concatenate([pos, neg])
    y = np.concatenate([np.ones_like(pos), np.zeros_like(neg)])
    order = np.argsort(d, kind="stable")
    ranks = np.empty(len(d))
    ranks[order] = np.arange(1, len(d) + 1)
    auc = 1 - (ranks[y == 1].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))
    thr = np.quantile(pos, 0.95)
    return float(auc), float((neg <= thr).mean())


def nn_accuracy(d1: torch.Tensor, d2: torch.Tensor, d3: torch.Tensor) -> float:
    """Share of ``d1[n]`` whose nearest descriptor among all of ``d2`` and ``d3`` is ``d2[n]``
    (ties: the first candidate). Shape: ``(N, D)`` each -> float in [0, 1]."""
    nn = torch.cdist(d1.float(), torch.cat([d2, d3]).float()).argmin(1)
    return float((nn == torch.arange(len(d1), device=nn.device)).float().mean())


def _wrap(a: torch.Tensor) -> torch.Tensor:
    return torch.remainder(a + math.pi, 2 * math.pi) - math.pi


class LIFTRecipe:
    """Loss and validation of one LIFT training stage."""

    def __init__(self, config: LIFTRecipeConfig = LIFTRecipeConfig(), val_set=None, batch_size: Optional[int] = None):
        if config.stage not in STAGES:
            raise UsageError(f"LIFT stage must be one of {', '.join(STAGES)}, got '{config.stage}'")
        if not (0.25 <= float(config.support_scale) <= 2.0):
            raise UsageError(f"LIFT support_scale must be from 0.25 to 2, got {config.support_scale!r}")
        if int(config.val_quads) < 1:
            raise UsageError(f"LIFT val_quads must be at least 1, got {config.val_quads!r}")
        if config.negatives not in NEGATIVES:
            raise UsageError(f"LIFT negatives must be one of {', '.join(NEGATIVES)}, got '{config.negatives}'")
        self.config = config
        self.val_set = val_set
        self.batch_size = batch_size
        self.name = f"lift-{config.stage}"

    # -- pieces -------------------------------------------------------------------------
    def describe(self, net: LIFTNet, P: torch.Tensor, xy: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
        """DESC of the Rot crop (12 sigma x ``support_scale``).
        Shape: P ``(N, 1, 128, 128)``, xy ``(N, 2)``, angle ``(N,)`` -> ``(N, 128)``."""
        return net.descriptor(crop_patch(P, xy, angle, scale=CROP_SCALE * self.config.support_scale)).float()

    def orient(self, net: LIFTNet, P: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
        """ORI on the Crop (unrotated) crop. Shape: -> ``(N,)`` radians."""
        return net.orientation(crop_patch(P, xy, scale=CROP_SCALE * self.config.support_scale)).float()

    def _step(self, batch: dict) -> int:
        b = self.batch_size or batch["P"].shape[0]
        return int(batch["index"][0]) // b

    # -- losses -------------------------------------------------------------------------
    def loss(self, model: torch.nn.Module, batch: dict):
        net = model.module if hasattr(model, "module") else model
        return getattr(self, f"_loss_{self.config.stage}")(net, batch)

    def _loss_desc(self, net: LIFTNet, batch: dict):
        c = self.config
        P, xy, ang = batch["P"], batch["xy"], batch["angle"]
        if c.negatives == "batch":
            d = [self.describe(net, P[:, k], xy[:, k], ang[:, k]) for k in range(3)]
            return descriptor_batch_hinge_loss(d[0], d[1], d[2], c.margin)
        r = mining_ratio(self._step(batch), c.mining_every, 1.0, c.mining_max)
        n = min(P.shape[0], int(round(c.pairs * r)))
        if n > c.pairs:  # rank the candidates without gradients, keep the hardest
            with torch.no_grad():
                d = [self.describe(net, P[:n, k], xy[:n, k], ang[:n, k]) for k in range(3)]
                pos = (d[0] - d[1]).norm(dim=-1)
                neg = torch.relu(c.margin - (d[0] - d[2]).norm(dim=-1))
                ip = torch.topk(pos, c.pairs).indices
                ineg = torch.topk(neg, c.pairs).indices
        else:
            ip = ineg = torch.arange(n, device=P.device)
        d1p = self.describe(net, P[ip, 0], xy[ip, 0], ang[ip, 0])
        d2p = self.describe(net, P[ip, 1], xy[ip, 1], ang[ip, 1])
        d1n = d1p if ineg is ip else self.describe(net, P[ineg, 0], xy[ineg, 0], ang[ineg, 0])
        d3n = self.describe(net, P[ineg, 2], xy[ineg, 2], ang[ineg, 2])
        loss, logs = descriptor_hinge_loss(d1p, d2p, d3n, c.margin, d1_neg=d1n)
        logs["mining_ratio"] = r
        return loss, logs

    def _loss_ori(self, net: LIFTNet, batch: dict):
        P, xy = batch["P"], batch["xy"]
        t1 = self.orient(net, P[:, 0], xy[:, 0])
        t2 = self.orient(net, P[:, 1], xy[:, 1])
        if self._step(batch) < self.config.ori_pretrain_steps:  # warm-up: imitate SIFT's orientation
            t3 = self.orient(net, P[:, 2], xy[:, 2])
            loss = orientation_regression_loss(torch.cat([t1, t2, t3]), batch["angle"][:, :3].T.reshape(-1))
            with torch.no_grad():
                err = _wrap((t2 - t1) - (batch["angle"][:, 1] - batch["angle"][:, 0])).abs().mean() * 180 / math.pi
            return loss, {"ori_err_deg": float(err), "pretrain": 1.0}
        d1 = self.describe(net, P[:, 0], xy[:, 0], t1)
        d2 = self.describe(net, P[:, 1], xy[:, 1], t2)
        loss = orientation_loss(d1, d2)
        with torch.no_grad():
            gt = batch["angle"][:, 1] - batch["angle"][:, 0]
            err = _wrap((t2 - t1) - gt).abs().mean() * 180 / math.pi
        return loss, {"ori_err_deg": float(err)}

    def _loss_det(self, net: LIFTNet, batch: dict):
        c = self.config
        P, gt, ang = batch["P"], batch["xy"], batch["angle"]
        n = P.shape[0]
        xy, score = net.detector.patch_forward(P.reshape(n * 4, *P.shape[2:]))
        xy, score = xy.reshape(n, 4, 2).float(), score.reshape(n, 4).float()
        l_cls = classification_loss(score)
        pre = self._step(batch) < c.det_pretrain_steps
        if pre:
            pair = overlap_loss(xy[:, 0], gt[:, 0], xy[:, 1], gt[:, 1], ang[:, 0] - ang[:, 1])
        else:
            d = []
            for k in (0, 1):
                Pk = P[:, k]
                d.append(self.describe(net, Pk, xy[:, k], self.orient(net, Pk, xy[:, k])))
            pair = orientation_loss(d[0], d[1])
        logs = {"loss_class": float(l_cls.detach()), "loss_pair": float(pair.detach()), "pretrain": float(pre)}
        return c.gamma * l_cls + pair, logs

    # -- validation ---------------------------------------------------------------------
    def validate(self, model: torch.nn.Module) -> dict:
        if self.val_set is None:
            return {}
        net = model.module if hasattr(model, "module") else model
        n = min(self.config.val_quads, self.val_set.size)
        out: dict = {"d": [], "err": [], "cls": [], "iou": []}
        dev = next(net.parameters()).device
        for i in range(0, n, 100):
            items = [self.val_set[j] for j in range(i, min(i + 100, n))]
            P = torch.stack([it["P"] for it in items]).to(dev)
            xy = torch.stack([it["xy"] for it in items]).to(dev)
            ang = torch.stack([it["angle"] for it in items]).to(dev)
            stage = self.config.stage
            if stage == "det":
                m = P.shape[0]
                det_xy, score = net.detector.patch_forward(P.reshape(m * 4, *P.shape[2:]))
                det_xy, score = det_xy.reshape(m, 4, 2), score.reshape(m, 4)
                ok = torch.cat([score[:, :3] > 0, score[:, 3:] < 0], 1).float().mean(1)
                out["cls"].append(ok)
                o1 = det_xy[:, 0] - xy[:, 0]
                c_, s_ = torch.cos(ang[:, 0] - ang[:, 1]), torch.sin(ang[:, 0] - ang[:, 1])
                v = det_xy[:, 1] - xy[:, 1]
                o2 = torch.stack([c_ * v[:, 0] - s_ * v[:, 1], s_ * v[:, 0] + c_ * v[:, 1]], -1)
                dd = (o1 - o2).abs()
                inter = torch.relu(1 - dd[:, 0]) * torch.relu(1 - dd[:, 1])
                out["iou"].append(inter / (2 - inter))
                pts = [det_xy[:, k] for k in range(3)]
            else:
                pts = [xy[:, k] for k in range(3)]
            if stage == "desc":
                th = [ang[:, k] for k in range(3)]
            else:
                th = [self.orient(net, P[:, k], pts[k]) for k in range(3)]
                out["err"].append(_wrap((th[1] - th[0]) - (ang[:, 1] - ang[:, 0])).abs())
            d = [self.describe(net, P[:, k], pts[k], th[k]) for k in range(3)]
            out["d"].append(torch.stack(d))
        d1, d2, d3 = torch.cat(out["d"], 1)  # each (n, 128)
        pos = (d1 - d2).norm(dim=-1).cpu().numpy()
        neg = (d1 - d3).norm(dim=-1).cpu().numpy()
        auc, fpr95 = _auc(pos, neg)
        res = {"auc": auc, "fpr95": fpr95, "neg_dist": -float(pos.mean()), "pos_dist": float(pos.mean()),
               "neg_pair_dist": float(neg.mean()), "nn_acc": nn_accuracy(d1, d2, d3)}
        if out["err"]:
            res["ori_err_deg"] = float(torch.cat(out["err"]).mean()) * 180 / math.pi
        if out["cls"]:
            res["cls_acc"] = float(torch.cat(out["cls"]).mean())
            res["iou"] = float(torch.cat(out["iou"]).mean())
        return res


# --------------------------------------------------------------------------- CLI
def add_arguments(p: argparse.ArgumentParser) -> None:
    """``featmatch train lift`` options (the others are shared with every method)."""
    g = p.add_argument_group("lift")
    g.add_argument("--stage", choices=STAGES, default=None, help="lift: which network to train (paper order: desc, ori, det)")
    g.add_argument("--start", default=None, help="lift: weights to start from (the previous stage's model.pt); drcnet: a trained head to continue from (a run's model.pt or the exported drcnet_xfeat.pt); loftr: loftr.tiny weights to fine-tune (a run's model.pt or an exported file); xfeat: featmatch XFeat weights to continue from (a run's model.pt, e.g. at a larger --size); loftr and xfeat keep the best validated weights, start included, as --init official does")
    g.add_argument("--val-patches", default=None, help="lift: held-out patch set (.npz); default: the last 5%% of --images")
    g.add_argument("--pairs-per-step", type=int, default=64, help="lift: positive (and negative) pairs per step")
    g.add_argument("--mining-every", type=int, default=5000, help="lift desc: the mining ratio doubles every N steps")
    g.add_argument("--negatives", choices=NEGATIVES, default="pairs",
                   help="lift desc: 'pairs' = the paper's P1-P3 negatives with progressive mining (default); "
                        "'batch' = each patch's hardest negative among the whole batch (featmatch's option; "
                        "--pairs-per-step quadruplets per step, all back-propagated)")
    g.add_argument("--support-scale", type=float, default=1.0,
                   help="lift: ORI / DESC crops cover 12 sigma x this, 0.25 to 2 (the paper: 1); "
                        "scripts/export_lift.py records it in the weight file, which featmatch.load('lift') "
                        "then uses")
    g.add_argument("--val-quads", type=int, default=400,
                   help="lift: held-out quadruplets per validation (nn_acc ranks each P1 among 2x this many)")
    g.add_argument("--det-init", choices=("dog", "keep"), default="dog",
                   help="lift det: start the detector as |DoG| (featmatch's warm start, default) or keep the "
                        "--start file's detector")
    g.add_argument("--pretrain-steps", type=int, default=None,
                   help="lift det: steps of eq. 11 overlap pre-training before the full loss (default: half); "
                        "lift ori: steps regressing SIFT's orientations before the paper's loss (default: half)")


def build_run(args: argparse.Namespace):
    """Trainer of one LIFT stage. ``--images``: patch sets (.npz from
    :func:`featmatch.data.lift_patches.build_patch_set` / ``build_real_patch_set``, several
    comma-separated are concatenated) or a photo folder (a patch set of
    20,000 quadruplets is built into ``OUT/patches.npz`` first)."""
    from ...data.lift_patches import LIFTPatchConfig, LIFTQuadruplets, build_patch_set
    from ..trainer import Trainer, TrainConfig

    if args.stage is None:
        raise UsageError("featmatch train lift needs --stage desc|ori|det")
    if getattr(args, "appearance", "standard") != "standard":
        raise UsageError("--appearance applies to the synthetic pairs of xfeat / loftr / drcnet training; "
                         "lift trains on patch sets (featmatch.data.lift_patches): leave it out")
    src = Path(args.images)
    sets = str(args.images).split(",")  # one or more patch sets (.npz)
    out = Path(args.out)
    if src.is_dir():
        from ...data import list_images

        files = list_images(src)
        val_files = files[::10] if len(files) >= 10 else files
        train_files = [f for f in files if f not in set(val_files)] or files
        out.mkdir(parents=True, exist_ok=True)
        if not (out / "patches.npz").exists():
            build_patch_set(train_files, out / "patches.npz", 20000, LIFTPatchConfig(seed=args.seed))
        if not args.val_patches and not (out / "val_patches.npz").exists():
            build_patch_set(val_files, out / "val_patches.npz", 500, LIFTPatchConfig(seed=args.seed + 1))
        train = LIFTQuadruplets(out / "patches.npz", shuffle_seed=args.seed)
        val = LIFTQuadruplets(args.val_patches or out / "val_patches.npz")
    elif all(Path(f).suffix == ".npz" for f in sets):
        train = LIFTQuadruplets(sets, shuffle_seed=args.seed)
        if args.val_patches:
            val = LIFTQuadruplets(args.val_patches)
        else:
            k = max(1, train.size // 20)
            val = LIFTQuadruplets({"P": train.P[-k:].numpy(), "xy": train.xy[-k:].numpy(),
                                   "angle": train.angle[-k:].numpy()})
            train = LIFTQuadruplets({"P": train.P[:-k].numpy(), "xy": train.xy[:-k].numpy(),
                                     "angle": train.angle[:-k].numpy()}, shuffle_seed=args.seed)
    else:
        raise UsageError(f"--images for lift must be a photo folder or patch sets (.npz, comma-separated), got {src}")
    torch.manual_seed(args.seed)
    net = LIFTNet()
    if args.start and not args.resume:
        from ... import hub

        state = hub.read_state_dict(args.start)  # the shared safe reader (drcnet's --start uses it too)
        state = {k[4:] if k.startswith("net.") else k: v.float() for k, v in state.items()}
        net.load_state_dict(state, strict=True)
    elif args.stage != "desc" and not args.resume:
        raise UsageError(f"--stage {args.stage} trains on top of the previous stage: pass --start RUN/model.pt")
    if args.stage == "det" and not args.resume and getattr(args, "det_init", "dog") == "dog":
        net.detector.init_dog(generator=torch.Generator().manual_seed(args.seed))
    trained = {"desc": net.descriptor, "ori": net.orientation, "det": net.detector}[args.stage]
    for p in net.parameters():
        p.requires_grad_(False)
    for p in trained.parameters():
        p.requires_grad_(True)
    pairs = args.pairs_per_step
    negatives = getattr(args, "negatives", "pairs")
    if negatives != "pairs" and args.stage != "desc":
        raise UsageError("--negatives is an option of --stage desc")
    least = 2 if negatives == "batch" else 1  # in-batch negatives need another quadruplet
    if pairs < least:
        raise UsageError(f"--pairs-per-step must be at least {least}{' with --negatives batch' if least > 1 else ''}, "
                         f"got {pairs}")
    mining_max = 4.0 if args.stage == "desc" and negatives == "pairs" else 1.0
    batch = int(pairs * mining_max)
    pre = args.pretrain_steps if args.pretrain_steps is not None else args.steps // 2
    recipe = LIFTRecipe(LIFTRecipeConfig(stage=args.stage, pairs=pairs, mining_every=args.mining_every,
                                         mining_max=mining_max, det_pretrain_steps=pre, ori_pretrain_steps=pre,
                                         negatives=negatives, support_scale=getattr(args, "support_scale", 1.0),
                                         val_quads=getattr(args, "val_quads", 400)),
                        val_set=val, batch_size=batch)
    keep_best = {"auto": {"desc": "auc", "ori": "neg_dist", "det": "neg_dist"}[args.stage],
                 "none": None}.get(args.keep_best, args.keep_best)
    cfg = TrainConfig(steps=args.steps, batch_size=batch, lr=args.lr, warmup_steps=args.warmup, grad_clip=args.grad_clip,
                      weight_decay=0.0, val_every=args.val_every, ckpt_every=args.ckpt_every, num_workers=args.workers,
                      device=args.device, amp=args.amp, seed=args.seed, keep_best=keep_best)
    meta = {"method": "lift", "stage": args.stage, "patches": ",".join(Path(f).name for f in sets),
            "train_quadruplets": train.size,
            "val_quadruplets": val.size, "start": Path(args.start).name if args.start else None,
            "pairs_per_step": pairs, "support_scale": recipe.config.support_scale,
            "negatives": negatives if args.stage == "desc" else None,
            "pretrain_steps": pre if args.stage in ("ori", "det") else None,
            "det_init": getattr(args, "det_init", None) if args.stage == "det" else None}
    return Trainer(net, recipe, train, args.out, cfg, extra_state=meta)
