"""DRC-Net: registered as ``drcnet.resnet101`` (the paper model; official checkpoint with
``weights=PATH``) and ``drcnet.resnet101_256`` (the reference's 256-d two-head variant).
See ``docs/drcnet.md``.
"""

from __future__ import annotations

from ...registry import ModelCard, register
from .model import DRCNet, DRCNetConfig, extract_matches

__all__ = ["DRCNet", "DRCNetConfig", "extract_matches"]

_PAPER = "Li et al., Dual-Resolution Correspondence Networks, NeurIPS 2020"


def _official_missing(name: str) -> str:
    return (f"the official DRC-Net checkpoint (dualrc-net.pth.tar, Google Drive) cannot be downloaded by featmatch; "
            f"pass it for '{name}' with featmatch.load('{name}', weights=PATH) (CLI: --weights PATH), "
            "or pretrained=False (random weights; backbone_weights=PATH loads torchvision's ImageNet ResNet-101)")


register(
    "drcnet.resnet101",
    card=ModelCard(
        name="drcnet.resnet101", family="drcnet", kind="dense",
        summary="DRC-Net paper model: ResNet-101 + FPN (1024-d), 4D NC at 1/16, fine matching at 1/4",
        paper=_PAPER, code_license="Apache-2.0", weights=None, weights_origin="official-not-downloadable",
        input="RGB float [0, 1], any size (ImageNet-normalised; resized to multiples of 16)",
        notes=("weights: the released dualrc-net.pth.tar ('module.' keys, args Namespace) with weights=PATH; "
               "the reference tests at 1600 px (resize=1600); featmatch matches at the given size, capped by max_pixels (1024x768)"),
        missing_weights=_official_missing("drcnet.resnet101")),
    config_cls=DRCNetConfig, build=DRCNet,
)

register(
    "drcnet.resnet101_256",
    card=ModelCard(
        name="drcnet.resnet101_256", family="drcnet", kind="dense",
        summary="DRC-Net, the reference's 256-d two-head FPN variant (resnet101fpn_3_256_4)",
        paper=_PAPER, code_license="Apache-2.0", weights=None, weights_origin="official-not-downloadable",
        input="RGB float [0, 1], any size (ImageNet-normalised; resized to multiples of 16)",
        notes="no released checkpoint of this variant; weights=PATH for your own",
        missing_weights=_official_missing("drcnet.resnet101_256")),
    config_cls=DRCNetConfig, build=DRCNet, defaults={"fpn": "two_heads", "feature_dim": 256},
)
