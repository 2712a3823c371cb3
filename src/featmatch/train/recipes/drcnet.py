"""Training DRC-Net: the reference's strong sparse loss (+ orthogonality) on homography pairs.

One step (reference ``train.py`` defaults: ``--loss orthogonal_meanfnorm``,
``--weight_orthogonal 0.05``, ``--gauss_size 3``, ``--mode 1`` (4-NN splat), ``--numKey 128``,
``--weight_loss 0 1 0``; Adam lr 1e-3 on the trainable parameters, frozen backbone in eval mode):

1. :meth:`DRCNet.forward` on the pair: filtered coarse 4D scores, L2-normalised fine maps;
2. ``num_points`` ground-truth correspondences: points drawn uniformly in image 0, mapped
   by ``H_0to1``; valid when inside image 1 (and its ``valid1`` mask);
3. for each point, in both directions, the fine score map (coarse prior x fine cosine, the
   same function as inference: :func:`~featmatch.models.drcnet.model.coarse_prior`,
   :func:`~featmatch.models.drcnet.model.fine_scores`) against the blurred 4-neighbour
   target (:func:`~featmatch.train.losses.drcnet.fine_targets`);
4. loss :func:`~featmatch.train.losses.drcnet.drcnet_strong_total`; optionally
   ``weak_weight`` x the weak loss (negatives: image 0 rolled by one in the batch).

Points are passed to the reference's functions in its image coordinates (featmatch pixels
+ 0.5). Validation: inference on held-out synthetic pairs (MMA, homography accuracy).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Optional

import torch

from ...models.drcnet.model import BACKBONE_PREFIX, FINE_STRIDE, coarse_prior, fine_scores
from ..losses.drcnet import drcnet_strong_total, fine_targets, weak_loss


@dataclass(frozen=True)
class DRCNetRecipeConfig:
    """Loss options (defaults: the reference's train.py)."""

    num_points: int = 128  # ground-truth correspondences per pair (--numKey)
    weight_orthogonal: float = 0.05  # --weight_orthogonal
    blur: int = 3  # --gauss_size (3, 5 or 0)
    weak_weight: float = 0.0  # weight of the weak loss (reference default 0)
    val_pairs: int = 16  # held-out pairs evaluated by validate()


def sample_correspondences(H: torch.Tensor, size_wh: tuple[int, int], n: int, valid1: Optional[torch.Tensor] = None,
                           generator: Optional[torch.Generator] = None):
    """``n`` points per pair drawn uniformly in image 0 (featmatch pixels), preferring those
    that land inside image 1 (4n candidates, valid ones first).

    Shape: H ``(B, 3, 3)``, valid1 ``(B, H, W)`` -> pts0, pts1 ``(B, n, 2)``, valid ``(B, n)``.
    """
    b = H.shape[0]
    w, h = size_wh
    dev = H.device
    m = 4 * n
    u = torch.rand(b, m, 2, generator=generator).to(dev)
    p0 = u * torch.tensor([w - 1.0, h - 1.0], device=dev)
    ph = torch.cat([p0, torch.ones(b, m, 1, device=dev)], -1) @ H.float().transpose(1, 2)
    p1 = ph[..., :2] / ph[..., 2:].clamp_min(1e-8)
    ok = (ph[..., 2] > 1e-8) & (p1[..., 0] >= 0) & (p1[..., 0] <= w - 1) & (p1[..., 1] >= 0) & (p1[..., 1] <= h - 1)
    if valid1 is not None:
        xi = p1[..., 0].round().long().clamp(0, w - 1)
        yi = p1[..., 1].round().long().clamp(0, h - 1)
        ok &= valid1[torch.arange(b, device=dev)[:, None], yi, xi]
    order = torch.argsort((~ok).to(torch.int8), dim=1, stable=True)[:, :n]
    take = lambda t: torch.gather(t, 1, order[..., None].expand(-1, -1, t.shape[-1]))  # noqa: E731
    valid = torch.gather(ok, 1, order)
    p1 = take(p1)
    p1 = torch.stack([p1[..., 0].clamp(0, w - 1), p1[..., 1].clamp(0, h - 1)], -1)
    return take(p0), p1, valid


def score_maps(out: dict, pts0: torch.Tensor, pts1: torch.Tensor):
    """Fine score maps of GT points in both directions (reference coordinates = pixels + 0.5).
    Shape: -> ``(B, N, H1f*W1f)``, ``(B, N, H0f*W0f)``."""
    u0, u1 = pts0 + 0.5, pts1 + 0.5
    pred_ab = fine_scores(coarse_prior(out["corr"], u0, True), out["fine0"], out["fine1"], u0)
    pred_ba = fine_scores(coarse_prior(out["corr"], u1, False), out["fine1"], out["fine0"], u1)
    return pred_ab, pred_ba


class DRCNetRecipe:
    """Loss of a batch of homography pairs and validation."""

    name = "drcnet"

    def __init__(self, config: DRCNetRecipeConfig = DRCNetRecipeConfig(), val_set=None):
        self.config = config
        self.val_set = val_set

    def loss(self, model: torch.nn.Module, batch: dict):
        c = self.config
        x0, x1 = batch["image0"], batch["image1"]
        size = (x0.shape[-1], x0.shape[-2])
        with torch.autocast(x0.device.type, enabled=False):  # float32 geometry, also under AMP
            pts0, pts1, valid = sample_correspondences(batch["H_0to1"], size, c.num_points, batch.get("valid1"))
        out = model(x0, x1)
        out = {k: v.float() for k, v in out.items()}
        pred_ab, pred_ba = score_maps(out, pts0, pts1)
        hw0 = tuple(out["fine0"].shape[-2:])
        hw1 = tuple(out["fine1"].shape[-2:])
        tgt_ab = fine_targets(pts1 + 0.5, hw1, valid, FINE_STRIDE, c.blur)
        tgt_ba = fine_targets(pts0 + 0.5, hw0, valid, FINE_STRIDE, c.blur)
        total, parts = drcnet_strong_total(pred_ab, tgt_ab, valid, pred_ba, tgt_ba, valid, c.weight_orthogonal)
        logs = {"loss_strong": parts["strong"], "loss_orthogonal": parts["orthogonal"],
                "valid_points": float(valid.float().sum(1).mean())}
        if c.weak_weight > 0 and x0.shape[0] > 1:
            neg = model(torch.roll(x0, -1, 0), x1)["corr"].float()
            lw = weak_loss(out["corr"], neg)
            total = total + c.weak_weight * lw
            logs["loss_weak"] = float(lw.detach())
        with torch.no_grad():  # fine argmax error (px) of the A->B predictions at valid points
            idx = pred_ab.argmax(2)
            wf = hw1[1]
            pos = torch.stack([idx % wf, idx // wf], -1).float() * FINE_STRIDE + (FINE_STRIDE / 2 - 0.5)
            err = (pos - pts1).norm(dim=-1)[valid]
            if err.numel():
                logs["fine_error_px"] = float(err.median())
                logs["acc@8px"] = float((err <= 8).float().mean())
        return total, logs

    def validate(self, model: torch.nn.Module) -> dict:
        if self.val_set is None:
            return {}
        from .loftr import evaluate_dense

        return evaluate_dense(model, self.val_set, self.config.val_pairs)


#: light CPU presets: backbone -> DRCNetConfig overrides
PRESETS = {
    "xfeat": {"backbone": "xfeat", "fpn": "two_heads", "feature_dim": 128},  # = models.drcnet.XFEAT
    "aliked-t16": {"backbone": "aliked-t16", "fpn": "two_heads", "feature_dim": 128},  # compared, not shipped
}


def load_head(net: torch.nn.Module, path: str) -> None:
    """Start from trained head + NC weights: a run's ``model.pt`` (its backbone part is
    ignored: the official backbone stays) or an exported head (``drcnet_xfeat.pt``)."""
    from ... import hub
    from ...errors import UsageError

    state = hub.read_state_dict(path)
    own = net.state_dict()
    head = {k: v for k, v in state.items() if not k.startswith(BACKBONE_PREFIX)}
    wanted = {k for k in own if not k.startswith(BACKBONE_PREFIX)}
    missing, unknown = sorted(wanted - set(head)), sorted(set(head) - wanted)
    bad = [k for k in wanted & set(head) if tuple(head[k].shape) != tuple(own[k].shape)]
    if missing or unknown or bad:
        raise UsageError(f"--start {path}: not a head of this preset (missing {missing[:3]}, unknown {unknown[:3]}, "
                         f"shape mismatch {bad[:3]}); give a model.pt of the same --backbone")
    net.load_state_dict({k: v.to(own[k].dtype) for k, v in head.items()}, strict=False)


def build_drcnet_run(args: argparse.Namespace, datasets, train_config):
    """Trainer of a light DRC-Net preset (frozen official XFeat / ALIKED backbone; trained
    FPN head + NC). ``datasets`` / ``train_config`` are train.cli's helpers."""
    from ...errors import UsageError
    from ...models.drcnet.model import DRCNet, DRCNetConfig, official_backbone_state
    from ..trainer import Trainer

    bb = getattr(args, "backbone", None) or "xfeat"
    if bb not in PRESETS:
        raise UsageError(f"--backbone for drcnet must be one of {', '.join(PRESETS)}; got '{bb}'")
    if args.init != "scratch":
        raise UsageError("drcnet trains its head and NC from random weights on an official frozen backbone; "
                         "use --init scratch")
    size = args.size_wh
    train, val, meta = datasets
    torch.manual_seed(args.seed)
    net = DRCNet(DRCNetConfig(**PRESETS[bb]))
    net.FeatureExtraction.backbone.load_state_dict(official_backbone_state(bb), strict=True)
    start = getattr(args, "start", None)
    if start and not args.resume:
        load_head(net, start)
    recipe = DRCNetRecipe(DRCNetRecipeConfig(), val_set=val)
    meta.update({"method": "drcnet", "backbone": bb, "preset": PRESETS[bb], "size": list(size)})
    return Trainer(net, recipe, train, args.out, train_config, extra_state=meta)
