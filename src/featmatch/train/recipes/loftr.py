"""Training LoFTR: the paper's coarse and fine losses on homography or depth pairs.

One step (paper section 3.5, reference ``loftr_ds`` training settings):

1. grey images through :meth:`LoFTR.forward`, which returns the full coarse confidence
   matrix ``P_c`` (and its exact log);
2. coarse ground truth from the homography (or depth + pose) of the pair:
   :func:`~featmatch.train.losses.loftr.coarse_gt_homography` /
   :func:`~featmatch.train.losses.loftr.coarse_gt_depth` (mutual nearest cells);
3. coarse loss: focal loss on ``P_c`` (alpha 0.25, gamma 2, as the reference's dual-softmax
   setting) or the paper's NLL;
4. the fine module refines a mix of predicted coarse matches (up to ``pred_share`` of the
   smaller grid per pair, chosen at random) padded with ground-truth matches (at least
   ``min_gt`` per pair), as the reference does so the fine stage trains from the first
   step; fine loss: L2 weighted by the inverse heatmap std, on matches whose true position
   lies inside the window.

Validation: LoFTR inference (``model.match``) on held-out synthetic pairs: MMA@{1,3,5}
under the true homography, homography accuracy (mean corner error <= 3 px after USAC
estimation) and the mean match count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from ...models.loftr.model import to_luma
from ..losses.loftr import (LoFTRLossWeights, coarse_focal_loss, coarse_gt_depth, coarse_gt_homography,
                            coarse_nll_loss, fine_gt, fine_l2_std_loss, loftr_total)


@dataclass(frozen=True)
class LoFTRRecipeConfig:
    """Loss and supervision options of the LoFTR recipe (defaults: the reference's)."""

    coarse_loss: str = "focal"  # "focal" (reference dual-softmax setting) or "nll" (paper eq. 3)
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    pred_share: float = 0.2  # predicted coarse matches refined in training: share of min(L, S) per pair
    min_gt: int = 200  # ground-truth coarse matches padded in per pair (fewer if the pair has fewer)
    weights: LoFTRLossWeights = field(default_factory=LoFTRLossWeights)
    val_pairs: int = 24  # held-out pairs evaluated by validate()


def _sample(n: int, k: int, gen: Optional[torch.Generator]) -> torch.Tensor:
    """``min(n, k)`` distinct indices of ``range(n)`` (random, from ``gen`` or torch's global RNG)."""
    if k >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=gen)[:k]


def training_coarse_ids(pred_b: torch.Tensor, pred_i: torch.Tensor, pred_j: torch.Tensor, gt_b: torch.Tensor,
                        gt_i: torch.Tensor, gt_j: torch.Tensor, batch: int, max_pred: int, min_gt: int,
                        gen: Optional[torch.Generator] = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Coarse matches the fine module refines in a training step: per pair, up to
    ``max_pred`` predictions at random, then ground-truth matches so that at least
    ``min_gt`` of them are there (fewer if the pair has fewer) and the total reaches
    ``max(max_pred, min_gt)`` where ground truth allows.

    Shape: all ids ``(M,)`` long -> ``(b, i, j)`` ``(M',)`` long.
    """
    out = []
    for k in range(batch):
        pk = (pred_b == k).nonzero()[:, 0]
        gk = (gt_b == k).nonzero()[:, 0]
        pk = pk[_sample(len(pk), max_pred, gen).to(pk.device)]
        n_gt = max(min_gt, max_pred - len(pk))
        gk = gk[_sample(len(gk), n_gt, gen).to(gk.device)]
        out.append((torch.cat([pred_b[pk], gt_b[gk]]), torch.cat([pred_i[pk], gt_i[gk]]),
                    torch.cat([pred_j[pk], gt_j[gk]])))
    return tuple(torch.cat([o[n] for o in out]) for n in range(3))


class LoFTRRecipe:
    """Loss of a batch of pairs (synthetic homography or depth pairs) and validation."""

    name = "loftr"
    # --amp: only the network forward under autocast (float32 ground truth, teacher, losses)
    amp_scope = "model"

    def __init__(self, config: LoFTRRecipeConfig = LoFTRRecipeConfig(), val_set=None):
        if config.coarse_loss not in ("focal", "nll"):
            raise ValueError(f"coarse_loss must be 'focal' or 'nll', got '{config.coarse_loss}'")
        self.config = config
        self.val_set = val_set

    def loss(self, model: torch.nn.Module, batch: dict):
        c = self.config
        net = model.module if hasattr(model, "module") else model
        x0, x1 = to_luma(batch["image0"]), to_luma(batch["image1"])
        n = x0.shape[0]
        hw0_c = (x0.shape[-2] // 8, x0.shape[-1] // 8)
        hw1_c = (x1.shape[-2] // 8, x1.shape[-1] // 8)
        with torch.no_grad():
            if "H_0to1" in batch:
                gt = coarse_gt_homography(batch["H_0to1"].float(), hw0_c, hw1_c)
            else:
                gt = coarse_gt_depth(batch["depth0"], batch["depth1"], batch["K0"], batch["K1"], batch["T_0to1"],
                                     hw0_c, hw1_c)
        # the refined matches are sampled with torch's global RNG, which the trainer's
        # checkpoints save and restore (so a resumed run samples as an uninterrupted one)
        gen = None
        max_pred = int(c.pred_share * min(hw0_c[0] * hw0_c[1], hw1_c[0] * hw1_c[1]))

        def choose(pred):
            return training_coarse_ids(pred.b, pred.i, pred.j, gt.b, gt.i, gt.j, n, max_pred, c.min_gt, gen)

        out = model(x0, x1, coarse_ids=choose)
        if c.coarse_loss == "focal":
            l_c = coarse_focal_loss(out["conf"], gt.matrix, alpha=c.focal_alpha, gamma=c.focal_gamma,
                                    log_conf=out["log_conf"])
        else:
            l_c = coarse_nll_loss(out["conf"], gt.matrix, log_conf=out["log_conf"])
        target = fine_gt(gt, out["b_f"], out["i_f"], out["j_f"], hw1_c, net.config.fine_window)
        l_f = fine_l2_std_loss(out["expectation"], out["std"], target)
        parts = {"coarse": l_c, "fine": l_f}
        total = loftr_total(parts, c.weights)
        with torch.no_grad():
            logs = {"loss_coarse": float(l_c.detach()), "loss_fine": float(l_f.detach()),
                    "gt_matches": float(gt.i.numel()) / n, "pred_matches": float(out["i"].numel()) / n}
            if out["i"].numel():  # share of predicted coarse matches that are ground truth
                hit = gt.matrix[out["b"], out["i"], out["j"]].float().mean()
                logs["coarse_precision"] = float(hit)
            ok = target.abs().amax(-1) < 1
            if bool(ok.any()):  # fine error in pixels of matches inside the window
                px = (out["expectation"][ok] - target[ok]).norm(dim=-1) * 2 * (net.config.fine_window // 2)
                logs["fine_error_px"] = float(px.mean())
        return total, logs

    def validate(self, model: torch.nn.Module) -> dict:
        """MMA@{1,3,5}, homography accuracy and match count on held-out pairs."""
        if self.val_set is None:
            return {}
        return evaluate_dense(model, self.val_set, self.config.val_pairs)


def evaluate_dense(matcher, pairs, n: int) -> dict:
    """Inference of a dense matcher (``matcher.match(image0, image1)``) on ``n`` homography
    pairs: mean MMA@{1,3,5} of its matches under the true H, the share of pairs whose
    estimated homography (USAC, 3 px) has mean corner error <= 3 px (``h_acc@3``), and the
    mean match count."""
    from ...estimators import estimate_homography
    from ...eval.metrics import homography_corner_error, mma

    base = matcher.module if hasattr(matcher, "module") else matcher
    was_training = base.training
    base.eval()
    res = {1: [], 3: [], 5: []}
    counts, good = [], []
    dev = next(base.parameters()).device
    for k in range(min(n, len(pairs))):
        item = pairs[k]
        img0, img1 = item["image0"].to(dev), item["image1"].to(dev)
        with torch.no_grad():
            m = base.match(img0, img1)
        H_gt = item["H_0to1"].double().numpy()
        counts.append(len(m))
        acc = mma(m.points0.cpu().numpy(), m.points1.cpu().numpy(), H_gt, thresholds=(1, 3, 5))
        for t in res:
            res[t].append(acc[t])
        err = float("inf")
        if len(m) >= 4:
            est = estimate_homography(m, threshold=3.0)
            if est.model is not None:
                err = homography_corner_error(est.model, H_gt, (img0.shape[-1], img0.shape[-2]))
        good.append(err <= 3.0)
    base.train(was_training)
    return {"mma@1": float(np.mean(res[1])), "mma@3": float(np.mean(res[3])), "mma@5": float(np.mean(res[5])),
            "h_acc@3": float(np.mean(good)), "matches": float(np.mean(counts))}
