"""DRC-Net: registered as ``drcnet.resnet101`` (the paper model; official checkpoint with
``weights=PATH``) and ``drcnet.resnet101_256`` (the reference's 256-d two-head variant).
See ``docs/drcnet.md``.
"""

from __future__ import annotations

from ...registry import ModelCard, WeightSpec, register
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

#: featmatch's trained ``drcnet.xfeat`` head (FPN laterals, coarse/fine 3x3 convs, NC),
#: float16, shipped inside the package; the frozen backbone is the official XFeat network
#: (``xfeat.pt`` from the hub, sha256-checked). Made by ``scripts/export_drcnet_xfeat.py``.
DRCNET_XFEAT_WEIGHTS = WeightSpec(
    filename="drcnet_xfeat.pt",
    sha256="23dfff34808bcbb4b3029cb89bde059145e0104bef788fc9c621ddbcc54589db",
    installed=(("featmatch", "weights/drcnet_xfeat.pt"),),
    license="Apache-2.0",
)

#: the light CPU preset (config overrides of DRCNetConfig); the trained architecture
XFEAT = {"backbone": "xfeat", "fpn": "two_heads", "feature_dim": 128}
#: inference default of the shipped drcnet.xfeat (on top of XFEAT): images matched with their
#: long side at 1024 px (points in the caller's pixels; 4:3 images then fill max_pixels
#: exactly). Was 640 (a priori, loftr.tiny's size); 1024 measured better on both dev
#: benchmarks (homography MHA@3 37.1 vs 34.3, pose AUC@10 73.2 vs 66.4) at ~7x the time.
#: subcell (featmatch's parabola on the fine correlation, session 7): pose AUC@10 73.2 -> 76.9
#: at 1024 (66.4 -> 77.5 at 640), homography MHA@3 34.3 -> 37.1 / MMA@3 42.1 -> 46.4 at 640
XFEAT_INFERENCE = {"resize": 1024, "subcell": True}

register(
    "drcnet.xfeat",
    card=ModelCard(
        name="drcnet.xfeat", family="drcnet", kind="dense",
        summary="DRC-Net CPU preset: frozen official XFeat (1/4, 1/8, 1/16) + 128-d FPN heads + 4D NC, trained by featmatch",
        paper=_PAPER, code_license="Apache-2.0", weights=DRCNET_XFEAT_WEIGHTS, weights_origin="featmatch",
        input="RGB or grey float [0, 1], any size (grey for the backbone; resized to multiples of 16)",
        notes=("head + NC (317,617 parameters) trained by featmatch: 340 steps x 4 synthetic homography pairs "
               "(320x256) of 2,245 photos, strong sparse + orthogonality loss, ~55 min on 1 CPU thread; backbone = "
               "official xfeat.pt (featmatch download xfeat); inference at long side 1024 with sub-cell refinement. "
               "Dev benchmarks, below SIFT: homography MHA@3 37.1% (SIFT 42.9%), MMA@3 49.2% (54.5%) without "
               "sub-cell; pose AUC@10 76.9% (80.7%). "
               "Recipe and numbers: docs/drcnet.md")),
    config_cls=DRCNetConfig, build=DRCNet, defaults={**XFEAT, **XFEAT_INFERENCE},
)
