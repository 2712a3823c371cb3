"""LoFTR: registered as ``loftr.outdoor``, ``loftr.indoor`` (paper sizes; official
checkpoints are passed with ``weights=PATH``) and ``loftr.tiny`` (a CPU-friendly preset trained
by featmatch; its checkpoint ships inside the package). See ``docs/loftr.md``.
"""

from __future__ import annotations

from ...registry import ModelCard, WeightSpec, register
from .model import LoFTR, LoFTRConfig, pad_to_multiple, to_luma

__all__ = ["LoFTR", "LoFTRConfig", "TINY", "TINY_INFERENCE", "pad_to_multiple", "to_luma"]

_PAPER = "Sun et al., LoFTR: Detector-Free Local Feature Matching with Transformers, CVPR 2021"

#: The CPU-friendly preset (config overrides of LoFTRConfig): backbone widths 32/64/128 (the
#: 1/2-resolution stages dominate the cost), 128-d coarse transformer with 2 x [self, cross]
#: (4 heads of 32 as the paper's coarse), 32-d fine transformer (2 heads of 16 as the paper's
#: fine); fixed positional encoding. 1.7 M parameters (paper sizes: 11.6 M).
TINY = {
    "initial_dim": 32,
    "block_dims": (32, 64, 128),
    "coarse_heads": 4,
    "coarse_layers": ("self", "cross") * 2,
    "fine_heads": 2,
    "fine_layers": ("self", "cross"),
    "pos_encoding_fix": True,
}

#: Inference defaults of the shipped ``loftr.tiny`` (on top of TINY): it was trained at
#: 320x256, so images are matched with their long side at 640 px (matches are returned in the
#: caller's pixels) and the Lucas-Kanade sub-pixel step is on; both measured better on the
#: homography benchmark than full size / no step (docs/loftr.md).
TINY_INFERENCE = {"resize": 640, "subpixel": "lk"}


def _official_missing(name: str, ckpt: str) -> str:
    return (f"the official LoFTR checkpoints (outdoor_ds.ckpt, indoor_ds.ckpt) cannot be downloaded by featmatch; "
            f"pass yours for '{name}' ({ckpt}) with featmatch.load('{name}', weights=PATH) (CLI: --weights PATH), "
            f"or pretrained=False for random weights")


for _tag, _ckpt, _data in (("outdoor", "outdoor_ds.ckpt", "MegaDepth"), ("indoor", "indoor_ds.ckpt", "ScanNet")):
    _name = f"loftr.{_tag}"
    register(
        _name,
        card=ModelCard(
            name=_name, family="loftr", kind="dense",
            summary=f"LoFTR (paper sizes, dual-softmax) for the official {_data} checkpoint {_ckpt}",
            paper=_PAPER, code_license="Apache-2.0", weights=None, weights_origin="official-not-downloadable",
            input="RGB or grey float [0, 1], any size (converted to grey, padded to multiples of 8)",
            notes=(f"weights: pass the official {_ckpt} (Lightning .ckpt, 'matcher.' keys) with weights=PATH; "
                   "for indoor_ds_new.ckpt also set pos_encoding_fix=True; *_ot.ckpt needs match_type='sinkhorn'"),
            missing_weights=_official_missing(_name, _ckpt)),
        config_cls=LoFTRConfig, build=LoFTR,
    )

#: featmatch's trained ``loftr.tiny`` checkpoint, shipped inside the package (float16,
#: 3.4 MB; made by ``scripts/export_loftr_tiny.py`` from a ``featmatch train loftr`` run).
LOFTR_TINY_WEIGHTS = WeightSpec(
    filename="loftr_tiny.pt",
    sha256="55cf3d978403e201e7b640b8e799175e3369a4a5ffb37b935663b3c06b370bc5",
    installed=(("featmatch", "weights/loftr_tiny.pt"),),
    license="Apache-2.0",
)

_TINY_NOTES = ("trained by featmatch from random weights: 2,500 steps x 2 synthetic homography pairs (320x256) "
               "from 26 photos, focal + fine L2-std loss, 59 min on 2 CPU threads; homography benchmark "
               "(35 real pairs) MHA@1/3/5 14.3/42.9/45.7% (SIFT 20.0/42.9/57.1%); inference defaults "
               "resize=640, subpixel='lk'. Recipe and numbers: docs/loftr.md")

register(
    "loftr.tiny",
    card=ModelCard(
        name="loftr.tiny", family="loftr", kind="dense",
        summary="LoFTR tiny: CPU-friendly preset (32/64/128 backbone, 2x[self,cross] 128-d coarse transformer)",
        paper=_PAPER, code_license="Apache-2.0", weights=LOFTR_TINY_WEIGHTS, weights_origin="featmatch",
        input="RGB or grey float [0, 1], any size (converted to grey, padded to multiples of 8)",
        notes=_TINY_NOTES),
    config_cls=LoFTRConfig, build=LoFTR, defaults={**TINY, **TINY_INFERENCE},
)
