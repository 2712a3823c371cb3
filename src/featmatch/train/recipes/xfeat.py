"""Training XFeat: synthetic homography pairs (and depth pairs), the paper's four losses.

Ground truth at the 1/8 cells: the centre of every image-1 cell (``8 j + 3.5``) is warped
into image 0, landing at ``p``; the image-0 cell is ``i = floor(p / 8)`` and the fine label
is ``floor(p) - 8 i`` per axis (class ``8 * row + col``). A cell matched to itself therefore
has class (3, 3), and class ``k`` covers displacements ``[k - 3.5, k - 2.5)`` from the cell
centre: decode with ``refine_decoder="centered"`` (displacement = expected class - 3). The
released XFeat weights answer class ~3 for zero displacement too, so fine-tuning them keeps
their convention. Correspondences whose image-0 cell repeats are dropped (one per cell, the
one nearest the cell centre), as the reference does "for network convergence".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch

from ...errors import FeatmatchError
from ...geometry.warp import warp_points_depth, warp_points_homography
from ..losses.xfeat import (XFeatLossWeights, dual_softmax_loss, fine_offset_loss, keypoint_distillation_loss,
                            keypoint_labels, reliability_loss, xfeat_total)


@dataclass(frozen=True)
class XFeatRecipeConfig:
    """Loss and supervision options of the XFeat recipe."""

    temperature: float = 0.2  # dual-softmax temperature (reference: 0.2)
    min_correspondences: int = 30  # pairs with fewer coarse correspondences are skipped
    max_correspondences: int = 2048  # per pair (evenly subsampled beyond)
    teacher: str = "aliked.t16"  # keypoint teacher: a featmatch model name, or "fast" (OpenCV FAST)
    teacher_top_k: int = 1024  # keypoints taken from the teacher per image
    weights: XFeatLossWeights = field(default_factory=XFeatLossWeights)
    val_pairs: int = 24  # held-out pairs evaluated by validate()
    val_top_k: int = 1024  # keypoints per image during validation


def coarse_correspondences_h(H: torch.Tensor, valid1: Optional[torch.Tensor], cells_hw: tuple[int, int]):
    """Coarse correspondences and fine labels from a homography (see module docstring).

    Shape:
        H: ``(3, 3)`` H_0to1; valid1: ``(8h, 8w)`` bool or None.
        returns cell indices ``i0 (N,)``, ``i1 (N,)`` (flattened ``y * w + x``), fine labels
        ``(N,)`` in [0, 63].
    """
    h, w = cells_hw
    dev = H.device
    ys, xs = torch.meshgrid(torch.arange(h, device=dev), torch.arange(w, device=dev), indexing="ij")
    centres1 = torch.stack([xs, ys], -1).reshape(1, -1, 2).float() * 8 + 3.5
    H10 = torch.linalg.inv(H.double()).float()[None]
    p0, ok = warp_points_homography(centres1, H10, (8 * w, 8 * h))
    p0, ok = p0[0], ok[0]
    if valid1 is not None:  # the image-1 cell centre must show real content
        c = centres1[0].round().long()
        ok &= valid1[c[:, 1].clamp(0, 8 * h - 1), c[:, 0].clamp(0, 8 * w - 1)]
    return _cells_and_labels(p0, ok, cells_hw)


def _cells_and_labels(p0: torch.Tensor, ok: torch.Tensor, cells_hw: tuple[int, int]):
    h, w = cells_hw
    pix = p0.floor().long()  # cell = floor(p / 8), label = floor(p) mod 8 (see module doc)
    ok = ok & (pix[:, 0] >= 0) & (pix[:, 0] < 8 * w) & (pix[:, 1] >= 0) & (pix[:, 1] < 8 * h)
    i1 = ok.nonzero()[:, 0]
    pix = pix[i1]
    i0 = (pix[:, 1] // 8) * w + (pix[:, 0] // 8)
    labels = (pix[:, 1] % 8) * 8 + (pix[:, 0] % 8)
    # one correspondence per image-0 cell: keep the point nearest that cell's centre
    centre = torch.stack([(i0 % w) * 8 + 3.5, (i0 // w) * 8 + 3.5], -1)
    dist = (p0[i1] - centre).norm(dim=-1)
    order = torch.argsort(dist, stable=True)
    i0, i1, labels = i0[order], i1[order], labels[order]
    seen = torch.full((h * w,), -1, dtype=torch.long, device=i0.device)
    seen.scatter_reduce_(0, i0, torch.arange(len(i0), device=i0.device), reduce="amin", include_self=False)
    first = seen[i0] == torch.arange(len(i0), device=i0.device)
    return i0[first], i1[first], labels[first]


def coarse_correspondences_depth(batch: dict, b: int, cells_hw: tuple[int, int]):
    """Same as :func:`coarse_correspondences_h` from depth maps, intrinsics and pose."""
    h, w = cells_hw
    dev = batch["depth0"].device
    ys, xs = torch.meshgrid(torch.arange(h, device=dev), torch.arange(w, device=dev), indexing="ij")
    centres1 = torch.stack([xs, ys], -1).reshape(1, -1, 2).float() * 8 + 3.5
    T10 = torch.linalg.inv(batch["T_0to1"][b:b + 1].double()).float()
    p0, ok = warp_points_depth(centres1, batch["depth1"][b:b + 1], batch["depth0"][b:b + 1],
                               batch["K1"][b:b + 1], batch["K0"][b:b + 1], T10)
    return _cells_and_labels(p0[0], ok[0], cells_hw)


def make_teacher(name: str, device: torch.device) -> Callable[[torch.Tensor], list]:
    """Keypoint teacher: images ``(B, C, H, W)`` -> list of ``(N, 2)`` keypoints."""
    if name == "fast":
        import cv2

        det = cv2.FastFeatureDetector_create(threshold=20, nonmaxSuppression=True)

        def fast(images: torch.Tensor, top_k: int) -> list:
            out = []
            for img in images:
                g = (img.mean(0).clamp(0, 1) * 255).byte().cpu().numpy()
                kps = sorted(det.detect(g, None), key=lambda k: -k.response)[:top_k]
                out.append(torch.tensor([k.pt for k in kps], dtype=torch.float32).reshape(-1, 2))
            return out
        return fast
    from ...registry import list_models, load

    if name not in list_models():
        raise FeatmatchError(f"unknown keypoint teacher '{name}'; use a featmatch model (e.g. aliked.t16) or 'fast'")
    model = load(name, device=device)

    def teach(images: torch.Tensor, top_k: int) -> list:
        feats = model.extract(images)
        items = list(feats) if feats.is_batched else [feats]
        return [f.keypoints[:top_k].float().cpu() for f in items]
    return teach


class XFeatRecipe:
    """Loss of a batch of pairs (synthetic homography or depth pairs) and validation."""

    name = "xfeat"
    # --amp: only the network forward under autocast (float32 ground truth, teacher, losses)
    amp_scope = "model"

    def __init__(self, config: XFeatRecipeConfig = XFeatRecipeConfig(), val_set=None, teacher=None,
                 val_pose=None):
        self.config = config
        self.val_set = val_set
        self.val_pose = val_pose  # optional real pose pairs (featmatch.eval.data.PosePair list)
        self._teacher = teacher

    def teacher(self, images: torch.Tensor) -> list:
        if self._teacher is None:
            self._teacher = make_teacher(self.config.teacher, images.device)
        with torch.no_grad():
            return self._teacher(images, self.config.teacher_top_k)

    def loss(self, model: torch.nn.Module, batch: dict):
        c = self.config
        net = model.module if hasattr(model, "module") else model
        x0, x1 = batch["image0"], batch["image1"]
        b = x0.shape[0]
        feats0, kp0, rel0 = model(x0)
        feats1, kp1, rel1 = model(x1)
        h, w = feats0.shape[-2:]
        parts = {"descriptors": [], "reliability": [], "fine": []}
        acc_coarse, n_corr = [], []
        for k in range(b):
            if "H_0to1" in batch:
                i0, i1, labels = coarse_correspondences_h(batch["H_0to1"][k], batch.get("valid1", [None] * b)[k], (h, w))
            else:
                i0, i1, labels = coarse_correspondences_depth(batch, k, (h, w))
            if len(i0) < c.min_correspondences:
                continue
            if len(i0) > c.max_correspondences:
                sel = torch.linspace(0, len(i0) - 1, c.max_correspondences, device=i0.device).long()
                i0, i1, labels = i0[sel], i1[sel], labels[sel]
            m0 = feats0[k].flatten(1)[:, i0].t()
            m1 = feats1[k].flatten(1)[:, i1].t()
            l_ds, conf = dual_softmax_loss(m0, m1, c.temperature)
            parts["descriptors"].append(l_ds)
            parts["reliability"].append(reliability_loss(rel0[k, 0].flatten()[i0], rel1[k, 0].flatten()[i1], conf))
            logits = net.refiner(torch.cat([m0, m1], -1))
            parts["fine"].append(fine_offset_loss(logits, labels, conf))
            with torch.no_grad():
                acc_coarse.append(((m0 @ m1.t()).argmax(1) == torch.arange(len(m0), device=m0.device)).float().mean())
                n_corr.append(float(len(i0)))
        zero = feats0.sum() * 0.0
        agg = {k: torch.stack(v).mean() if v else zero for k, v in parts.items()}
        teach = self.teacher(torch.cat([x0, x1]))
        labels = keypoint_labels(teach, (h, w), device=x0.device)
        agg["keypoints"] = keypoint_distillation_loss(torch.cat([kp0, kp1]), labels)
        total = xfeat_total(agg, c.weights)
        logs = {f"loss_{k}": float(v.detach()) for k, v in agg.items()}
        if acc_coarse:
            logs["acc_coarse"] = float(torch.stack(acc_coarse).mean())
            logs["correspondences"] = float(np.mean(n_corr))
        return total, logs

    def validate(self, model: torch.nn.Module) -> dict:
        """MMA@{1,3,5} and match count of sparse XFeat inference on held-out synthetic pairs;
        with real pose pairs also ``pose_auc@5/10/20`` and ``pose_precision``."""
        out = {}
        if self.val_set is not None:
            out.update(evaluate_sparse_mma(model, self.val_set, self.config.val_pairs, self.config.val_top_k))
        if self.val_pose:
            out.update(evaluate_sparse_pose(model, self.val_pose, self.config.val_top_k))
        return out


def _sparse_xfeat(net: torch.nn.Module, top_k: int):
    """featmatch's XFeat front door around a training network (shares its weights, set to
    eval mode); also returns the network and whether it was in training mode."""
    from ...models.xfeat import XFeat, XFeatConfig

    base = net.module if hasattr(net, "module") else net
    was_training = base.training
    model = XFeat(XFeatConfig(top_k=top_k))
    model.net = base
    model.eval()
    return base, model, was_training


def evaluate_sparse_pose(net: torch.nn.Module, pairs, top_k: int = 4096) -> dict:
    """Relative-pose AUC@{5,10,20} (OpenCV USAC, 0.5 px, seed 0) and mean Sampson
    precision of XFeat sparse matches on real pose pairs (``featmatch.eval.data.pose_pairs``)."""
    from ...eval import pose as pose_eval
    from ...image import read_image

    base, model, was_training = _sparse_xfeat(net, top_k)
    rows = []
    for pair in pairs:
        a, b = read_image(pair.image0), read_image(pair.image1)
        m = model.match(a, b)
        pred = {"points0": m.points0.cpu().numpy(), "points1": m.points1.cpu().numpy(),
                "size0_wh": (a.shape[1], a.shape[0]), "size1_wh": (b.shape[1], b.shape[0]),
                "num_keypoints0": -1, "num_keypoints1": -1, "time_s": 0.0}
        rows.append(pose_eval.score_pair(pred, pair))
    base.train(was_training)
    summary = pose_eval.summarize(rows)
    return {**{f"pose_auc@{t}": float(v) for t, v in summary["auc"].items()},
            "pose_precision": float(summary["precision_sampson"])}


def evaluate_sparse_mma(net: torch.nn.Module, pairs, n: int, top_k: int = 1024) -> dict:
    """Mean matching accuracy of XFeat sparse inference with ``net`` on ``n`` pairs.

    Each pair gives MMA@t = share of MNN matches whose reprojection error under the
    ground-truth H is at most t px; reported are the means over pairs and the mean number
    of matches.
    """
    from ...eval.metrics import mma

    base, model, was_training = _sparse_xfeat(net, top_k)
    res = {1: [], 3: [], 5: []}
    counts = []
    dev = next(base.parameters()).device
    for i in range(min(n, len(pairs))):
        item = pairs[i]
        m = model.match(item["image0"].to(dev), item["image1"].to(dev))
        counts.append(len(m))
        acc = mma(m.points0.cpu().numpy(), m.points1.cpu().numpy(), item["H_0to1"].double().numpy(), thresholds=(1, 3, 5))
        for t in res:
            res[t].append(acc[t])
    base.train(was_training)
    return {"mma@1": float(np.mean(res[1])), "mma@3": float(np.mean(res[3])), "mma@5": float(np.mean(res[5])),
            "matches": float(np.mean(counts))}
