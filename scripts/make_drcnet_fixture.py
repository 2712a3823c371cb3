"""Regenerate tests/fixtures/drcnet_parity.npz from the authors' DRC-Net code.

The reference is github.com/ActiveVisionLab/DualRC-Net (``lib/``, Apache-2.0 code; HEAD
102e6d5). It is run outside featmatch, on the CPU, with random weights, after two minimal
textual patches for torch 2 applied to a temporary copy (listed in ``PATCHES``):
``Conv4d`` passes ``padding_mode='zeros'`` (its version test picks the removed name 'zero'
on torch >= 2) and ``resnet101(pretrained=True)`` becomes ``resnet101(weights=None)`` (no
download; the weights are replaced anyway). ``.cuda()`` calls of the post-processing are
made no-ops by patching ``torch.Tensor.cuda`` / ``nn.Module.cuda`` inside this process.

    git clone https://github.com/ActiveVisionLab/DualRC-Net /tmp/DualRC-Net
    python scripts/make_drcnet_fixture.py --reference /tmp/DualRC-Net

Weights: every tensor of the reference's state dict is filled by :func:`deterministic_state`
(a function of the key name, the shape and a seed), so the test regenerates the same
weights for featmatch's model without storing 150 MB. Inputs: two overlapping crops of different sizes of
one synthetic image (in the fixture). Stored: every 64th channel of the L2-normalised fine
maps, the filtered 4D scores, and the ``ImgMatcher`` output (matches and scores), for
the default 1024-d variant and the 256-d two-head variant.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "drcnet_parity.npz"
SIZES = ((64, 96), (80, 64))  # (H, W) of image A and image B
NUM_PTS = 2000
CHANNEL_STEP = 64

PATCHES = {
    "conv4d.py": [("zeros = 'zeros' if (torch_versions[0] == 1 and torch_versions[1] >= 7) else 'zero'",
                   "zeros = 'zeros'")],
    "model_v2.py": [("models.resnet101(pretrained=True)", "models.resnet101(weights=None)")],
}


def deterministic_state(shapes: dict, seed: int = 0) -> dict:
    """A state dict for ``{key: (shape, dtype)}`` in the reference's layout: He-scaled
    normal conv weights (fan-in from the shape; Conv4d weights in the reference's
    pre-permuted (k, C_out, C_in, k, k, k) layout), BatchNorm weights in [0.5, 1],
    biases and running means in [-0.1, 0.1], running variances in [0.5, 1.5]. Each tensor
    is drawn from a generator seeded by (seed, key)."""
    out = {}
    for key, (shape, dtype) in shapes.items():
        g = torch.Generator().manual_seed(seed * 1_000_003 + int(hashlib.sha256(key.encode()).hexdigest()[:8], 16))
        shape = tuple(shape)
        if "num_batches_tracked" in key:
            out[key] = torch.zeros((), dtype=torch.int64)
            continue
        leaf = key.rsplit(".", 1)[-1]
        if leaf == "weight" and len(shape) >= 2:
            fan_in = int(np.prod(shape[1:])) if len(shape) != 6 else int(shape[2] * shape[0] * np.prod(shape[3:]))
            t = torch.randn(shape, generator=g) * (2.0 / fan_in) ** 0.5
        elif leaf == "weight":  # BatchNorm scale
            t = 0.5 + 0.5 * torch.rand(shape, generator=g)
        elif leaf == "running_var":
            t = 0.5 + torch.rand(shape, generator=g)
        else:  # bias, running_mean
            t = 0.2 * torch.rand(shape, generator=g) - 0.1
        out[key] = t.to(torch.float32)
    return out


def make_images() -> list[np.ndarray]:
    """Two overlapping crops (sizes SIZES, offset (x, y) = (24, 12) px) of one smooth random
    RGB image (uint8, HxWx3), so the pair has true correspondences."""
    rng = np.random.default_rng(0)
    h, w = 96, 128
    base = rng.uniform(0, 1, (h // 8 + 2, w // 8 + 2, 3)).astype(np.float32)
    t = torch.from_numpy(base).permute(2, 0, 1)[None]
    up = torch.nn.functional.interpolate(t, size=(h, w), mode="bicubic", align_corners=False)[0]
    up = up + 0.15 * torch.from_numpy(rng.standard_normal((3, h, w)).astype(np.float32))
    full = (up.clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    (ha, wa), (hb, wb) = SIZES
    return [full[:ha, :wa].copy(), full[12:12 + hb, 24:24 + wb].copy()]


def _import_reference(root: Path, tmp: Path):
    lib = tmp / "lib"
    shutil.copytree(root / "lib", lib, ignore=shutil.ignore_patterns("__pycache__"))
    for name, reps in PATCHES.items():
        p = lib / name
        s = p.read_text()
        for old, new in reps:
            if old not in s:
                raise SystemExit(f"patch target not found in {name}: {old}")
            s = s.replace(old, new)
        p.write_text(s)
    sys.path.insert(0, str(tmp))
    torch.Tensor.cuda = lambda self, *a, **k: self  # the post-processing moves tensors to the GPU
    torch.nn.Module.cuda = lambda self, *a, **k: self
    torch.cuda.current_device = lambda: None
    from lib import model_v2, tools  # noqa: E402

    return model_v2, tools


def loss_cases(res: dict) -> None:
    """The reference's strong-loss target (``InverInterpolator`` mode 1, 3x3 blur), its
    ``diff`` and ``strong_orthogonal`` terms and the weak score, on random inputs."""
    from lib import interpolator, loss  # noqa: E402 (imported by _import_reference's path)

    g = torch.Generator().manual_seed(2)
    b, n, h, w = 2, 6, 7, 9
    pts = torch.rand(b, n, 2, generator=g) * torch.tensor([4.0 * w, 4.0 * h])
    pts[0, 0] = torch.tensor([4.0 * 3 + 2.0, 4.0 * 2 + 2.0 + 0.3])  # near a cell centre
    inv = interpolator.InverInterpolator(4, kernel_size=3, N=n, mode=1)
    target = inv(torch.eye(n).expand(b, n, n), pts, h, w)
    pred = torch.rand(b, n, h * w, generator=g)
    key_num = torch.full((b,), float(n))
    sl = object.__new__(loss.SparseStrongWeakLoss)
    strong = sl.diff(pred, target, key_num)
    orth = sl.strong_orthogonal(pred, target, key_num)
    corr = torch.rand(b, 1, 3, 4, 3, 4, generator=g)
    weak = object.__new__(loss.WeakLoss)
    weak.with_softmax = True
    score = weak.normalised_max_correlation(corr)
    res.update(loss_points=pts.numpy(), loss_target=target.numpy(), loss_pred=pred.numpy(),
               loss_strong=strong.numpy(), loss_orth=orth.numpy(), loss_corr=corr.numpy(), loss_weak_score=score.numpy())


def to_input(img: np.ndarray) -> torch.Tensor:
    """uint8 HxWx3 -> the reference's input: ImageNet-normalised (1, 3, H, W)."""
    x = torch.from_numpy(img).float().permute(2, 0, 1)[None] / 255.0
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (x - mean) / std


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", required=True, help="checkout of ActiveVisionLab/DualRC-Net")
    ap.add_argument("--out", default=str(FIXTURE))
    args = ap.parse_args()
    torch.set_num_threads(1)
    imgs = make_images()
    res = {"imageA": imgs[0], "imageB": imgs[1]}
    with tempfile.TemporaryDirectory() as td:
        model_v2, tools = _import_reference(Path(args.reference), Path(td))
        for tag, cnn in (("1024", "resnet101fpn_3_1024_4"), ("256", "resnet101fpn_3_256_4")):
            net = model_v2.ImMatchNet(use_cuda=False, feature_extraction_cnn=cnn, ncons_kernel_sizes=[3, 3],
                                      ncons_channels=[16, 1], checkpoint=None)
            sd = net.state_dict()
            state = deterministic_state({k: (tuple(v.shape), v.dtype) for k, v in sd.items()})
            net.load_state_dict(state, strict=True)
            net.eval()
            matcher = object.__new__(tools.ImgMatcher)  # __init__ reads a checkpoint file
            matcher.model, matcher.im_fe_ratio, matcher.postprocess_device = net, 16, None
            matcher.feature_extractor = tools.ExtractFeatureMap(im_fe_ratio=16, device=None)
            batch = {"source_image": to_input(imgs[0]), "target_image": to_input(imgs[1])}
            with torch.no_grad():
                matches, scores, (corr, fa, fb) = matcher(batch, num_pts=NUM_PTS, iter_step=100, central_align=True)
            res[f"{tag}_corr"] = corr.numpy()
            res[f"{tag}_fineA"] = fa[:, ::CHANNEL_STEP].numpy()
            res[f"{tag}_fineB"] = fb[:, ::CHANNEL_STEP].numpy()
            res[f"{tag}_matches"] = matches.numpy()
            res[f"{tag}_scores"] = scores.numpy()
            print(tag, "corr", tuple(corr.shape), "fine", tuple(fa.shape), "matches", tuple(matches.shape))
        # match extraction alone, on structured inputs with many true matches: fine maps of
        # two overlapping crops of one smooth random feature field, the coarse scores their
        # pooled correlation (ReLU) through the two soft mutual filters
        g = torch.Generator().manual_seed(1)
        field = torch.nn.functional.interpolate(torch.randn(1, 16, 12, 14, generator=g), size=(44, 52),
                                                mode="bicubic", align_corners=False)
        fa = model_v2.featureL2Norm(field[:, :, :24, :32].contiguous())
        fb = model_v2.featureL2Norm(field[:, :, 8:44, 12:48].contiguous())
        ca = model_v2.featureL2Norm(torch.nn.functional.avg_pool2d(fa, 4))
        cb = model_v2.featureL2Norm(torch.nn.functional.avg_pool2d(fb, 4))
        corr = model_v2.FeatureCorrelation(shape="4D", normalization=False)(ca, cb).clamp_min(0)
        corr = model_v2.MutualMatching(model_v2.MutualMatching(corr))
        matcher.model = lambda batch: (corr, fa, fb)
        matches, scores, _ = matcher({"source_image": torch.zeros(1), "target_image": torch.zeros(1)},
                                     num_pts=300, iter_step=100, central_align=True)
        res.update(post_corr=corr.numpy(), post_fineA=fa.numpy(), post_fineB=fb.numpy(),
                   post_matches=matches.numpy(), post_scores=scores.numpy())
        print("post", "matches", tuple(matches.shape))
        loss_cases(res)
    np.savez_compressed(args.out, **res)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
