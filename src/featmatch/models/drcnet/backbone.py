"""DRC-Net feature extraction: a frozen backbone split into three stages (1/4, 1/8, 1/16)
and a trainable FPN head giving the fine (1/4) and coarse (1/16) maps.

Backbones:

* ``resnet101``: torchvision's ResNet-101 split as the reference (``extractor_list.0`` =
  conv1, bn1, relu, maxpool, layer1; ``.1`` = layer2; ``.2`` = layer3; layer4/fc unused),
  input normalised with the ImageNet mean/std.
* ``xfeat``: the official XFeat network's blocks 1-4 (grey input, instance-normalised):
  1/4 (24 ch, block2), 1/8 (64, block3), 1/16 (64, block4).
* ``aliked-t16`` / ``aliked-n16``: the official ALIKED encoder (RGB): 1/4 = block 2 (1/2)
  average-pooled, 1/8 = block 3, 1/16 = block 3 pooled concatenated with block 4 (1/32)
  upsampled.

Heads (``fpn``):

* ``"1024"`` (the reference default ``resnet101fpn_3_1024_4``): top level = raw last stage
  (coarse map); laterals ``inner_block_list.0`` (1x1, stage-2 -> dim) and ``.1`` (1x1,
  stage-1 -> dim) summed with bilinear (align_corners=True) upsampling top-down; fine map =
  ``last_layer_block`` (3x3, dim -> dim) on the 1/4 sum. ``dim`` = channels of the last stage.
* ``"two_heads"`` (the reference's ``resnet101fpn_3_256_4`` when dim = 256): laterals
  ``inner_block_list.0/1/2`` (1x1, stage 3/2/1 -> dim), top-down sums, coarse map =
  ``coarse_layer_block`` (3x3) on lateral(stage 3), fine map = ``fine_layer_block`` (3x3)
  on the 1/4 sum.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

BACKBONES = ("resnet101", "xfeat", "aliked-t16", "aliked-n16")
FPN_VARIANTS = ("1024", "two_heads")


class ResNet101Split(nn.Module):
    """ResNet-101 to layer3 in three ``nn.Sequential`` stages (reference names).

    Shape: ``(B, 3, H, W)`` RGB in [0, 1] -> [(B, 256, H/4, W/4), (B, 512, H/8, W/8),
    (B, 1024, H/16, W/16)] (H, W multiples of 16).
    """

    channels = (256, 512, 1024)

    def __init__(self):
        super().__init__()
        from torchvision.models import resnet101

        m = resnet101(weights=None)
        self.extractor_list = nn.ModuleList([
            nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool, m.layer1),
            nn.Sequential(m.layer2),
            nn.Sequential(m.layer3),
        ])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for stage in self.extractor_list:
            x = stage(x)
            out.append(x)
        return out


#: torchvision ResNet-101 state-dict prefixes -> ResNet101Split names (layer4 and fc unused)
TORCHVISION_PREFIXES = (("conv1.", "extractor_list.0.0."), ("bn1.", "extractor_list.0.1."),
                        ("layer1.", "extractor_list.0.4."), ("layer2.", "extractor_list.1.0."),
                        ("layer3.", "extractor_list.2.0."))


def remap_torchvision_resnet(state: dict) -> dict:
    """torchvision ``resnet101`` keys -> :class:`ResNet101Split` keys; ``layer4.*`` and
    ``fc.*`` are dropped (DRC-Net stops at layer3); any other key is kept as it is (and
    then fails the strict load)."""
    out = {}
    for k, v in state.items():
        if k.startswith(("layer4.", "fc.")):
            continue
        for old, new in TORCHVISION_PREFIXES:
            if k.startswith(old):
                k = new + k[len(old):]
                break
        out[k] = v
    return out


class XFeatStages(nn.Module):
    """The official XFeat network's blocks 1-4 (``net`` holds a full :class:`XFeatNet`
    so its official weights load unchanged; only blocks 1-4 run).

    Shape: ``(B, 1|3, H, W)`` in [0, 1] -> [(B, 24, H/4, W/4), (B, 64, H/8, W/8),
    (B, 64, H/16, W/16)].
    """

    channels = (24, 64, 64)

    def __init__(self):
        super().__init__()
        from ..xfeat import XFeatNet

        self.net = XFeatNet()

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        from ...image import to_grey

        return self.net.norm(to_grey(x))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        n = self.net
        x2 = n.block2(n.block1(x) + n.skip1(x))
        x3 = n.block3(x2)
        return [x2, x3, n.block4(x3)]


class ALIKEDStages(nn.Module):
    """The official ALIKED encoder (``net`` holds a full :class:`ALIKEDNet`; only the four
    encoder blocks run), padded at the bottom/right to a multiple of 32.

    Shape: ``(B, 3, H, W)`` RGB in [0, 1] -> [(B, c2, H/4, W/4), (B, c3, H/8, W/8),
    (B, c3 + c4, H/16, W/16)].
    """

    def __init__(self, tag: str):
        super().__init__()
        from ..aliked.network import VARIANTS, ALIKEDNet

        v = VARIANTS[tag]
        self.net = ALIKEDNet(v)
        self.channels = (v.c2, v.c3, v.c3 + v.c4)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        # float32 always: torchvision's CPU deformable convolution has no bfloat16 kernel
        with torch.autocast(x.device.type, enabled=False):
            return self._forward(x.float())

    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, w = x.shape[-2:]
        ph, pw = (-h) % 32, (-w) % 32
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        n = self.net
        x1 = n.enc1(x)
        x2 = n.enc2(F.avg_pool2d(x1, 2))
        x3 = n.enc3(F.avg_pool2d(x2, 4))
        x4 = n.enc4(F.avg_pool2d(x3, 4))
        f4 = F.avg_pool2d(x2, 2)[..., :h // 4, :w // 4]
        f8 = x3[..., :h // 8, :w // 8]
        up = F.interpolate(x4, scale_factor=2, mode="bilinear", align_corners=False)
        f16 = torch.cat([F.avg_pool2d(x3, 2), up], 1)[..., :h // 16, :w // 16]
        return [f4, f8, f16]


def build_backbone(name: str) -> nn.Module:
    if name == "resnet101":
        return ResNet101Split()
    if name == "xfeat":
        return XFeatStages()
    if name.startswith("aliked-"):
        return ALIKEDStages(name.split("-", 1)[1])
    raise ValueError(f"unknown DRC-Net backbone '{name}' (choose from {', '.join(BACKBONES)})")


class FeatureExtraction(nn.Module):
    """Frozen backbone + FPN head (module names as the reference's ``FeatureExtraction``).

    For ``resnet101`` the backbone's stages are attributes of this module
    (``extractor_list``), so the reference's keys apply unchanged; other backbones live
    under ``backbone.``.

    Shape: ``(B, C, H, W)`` in [0, 1], H and W multiples of 16 -> fine
    ``(B, D, H/4, W/4)``, coarse ``(B, D', H/16, W/16)`` (not normalised).
    """

    def __init__(self, backbone: str = "resnet101", fpn: str = "1024", dim: Optional[int] = None):
        super().__init__()
        if fpn not in FPN_VARIANTS:
            raise ValueError(f"unknown fpn variant '{fpn}' (choose from {', '.join(FPN_VARIANTS)})")
        bb = build_backbone(backbone)
        c1, c2, c3 = bb.channels
        self.fpn = fpn
        self.backbone_name = backbone
        if backbone == "resnet101":
            self.extractor_list = bb.extractor_list
        else:
            self.backbone = bb
        for p in self.frozen_parameters():
            p.requires_grad_(False)
        if fpn == "1024":
            d = c3
            self.last_layer_block = nn.Conv2d(d, d, 3, padding=1)
            self.inner_block_list = nn.ModuleList([nn.Conv2d(c2, d, 1), nn.Conv2d(c1, d, 1)])
        else:
            d = int(dim or 256)
            self.coarse_layer_block = nn.Conv2d(d, d, 3, padding=1)
            self.fine_layer_block = nn.Conv2d(d, d, 3, padding=1)
            self.inner_block_list = nn.ModuleList([nn.Conv2d(c3, d, 1), nn.Conv2d(c2, d, 1), nn.Conv2d(c1, d, 1)])
        self.dim = d

    def frozen_modules(self) -> list[nn.Module]:
        return [self.extractor_list] if hasattr(self, "extractor_list") else [self.backbone]

    def frozen_parameters(self):
        for m in self.frozen_modules():
            yield from m.parameters()

    def _stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        if hasattr(self, "extractor_list"):
            if x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)
            mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
            std = torch.tensor(IMAGENET_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
            x = (x - mean) / std
            out = []
            for stage in self.extractor_list:
                x = stage(x)
                out.append(x)
            return out
        return self.backbone(self.backbone.normalize(x))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        frozen_grad = any(p.requires_grad for p in self.frozen_parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and frozen_grad):
            c1, c2, c3 = self._stages(x)
        up = lambda t, ref: F.interpolate(t, size=ref.shape[-2:], mode="bilinear", align_corners=True)  # noqa: E731
        if self.fpn == "1024":
            p3 = self.inner_block_list[0](c2) + up(c3, c2)
            p2 = self.inner_block_list[1](c1) + up(p3, c1)
            return self.last_layer_block(p2), c3
        top = self.inner_block_list[0](c3)
        p3 = self.inner_block_list[1](c2) + up(top, c2)
        p2 = self.inner_block_list[2](c1) + up(p3, c1)
        return self.fine_layer_block(p2), self.coarse_layer_block(top)
