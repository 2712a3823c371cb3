"""Step 1: local features of every image of a folder into ``features.h5`` (hloc layout).

Images are named by their path relative to the folder (``sub/a.jpg``), so equal file
names in different sub-folders stay apart. Files that are not images (by extension) and
images that cannot be read are skipped and listed in the file's ``skipped`` attribute,
never fatal. Work is split into shards of images written atomically (see
:mod:`featmatch.pipeline.store`); a re-run skips every image already stored.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from ..errors import FeatmatchError, ImageReadError, UsageError
from . import store
from .engines import ModelJob, run_shards, split

log = logging.getLogger(__name__)

from ..data.synthetic import IMAGE_EXTS  # noqa: E402  (one list of image extensions)


def list_images(folder: Union[str, os.PathLike]) -> tuple[list[str], dict]:
    """Image names (relative POSIX paths, sorted) under ``folder`` and the skipped files.

    Hidden files and folders are ignored; other files without an image extension are
    returned in ``skipped`` (``{name: reason}``).

    Raises:
        FeatmatchError: the folder does not exist or holds no image.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FeatmatchError(f"image folder not found: {root}")
    names, skipped = [], {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or not p.is_file():
            continue
        if p.suffix.lower() in IMAGE_EXTS:
            names.append(rel.as_posix())
        else:
            skipped[rel.as_posix()] = f"not an image (extension '{p.suffix}')"
    if not names:
        extra = f" ({len(skipped)} other files, e.g. {next(iter(skipped))})" if skipped else " (it is empty)"
        raise FeatmatchError(f"no images ({', '.join(IMAGE_EXTS)}) in {root}{extra}; point --images at a folder of photos")
    return names, skipped


def resolve_model(model: str, overrides: Optional[dict] = None) -> tuple[str, dict]:
    """``(model, overrides)`` with a matcher chosen by name (``{"matcher": "lightglue"}``, as
    :func:`featmatch.load` takes it) folded into the model name (``aliked.n16+lightglue``)."""
    ov = dict(overrides or {})
    if isinstance(ov.get("matcher"), str):
        from ..registry import _with_matcher

        model = _with_matcher(model, ov.pop("matcher"))
    return model, ov


def model_identity(model: str, overrides: Optional[dict] = None, weights: Optional[str] = None) -> tuple[Any, str]:
    """``(config, weights_sha256)`` of a model as :func:`featmatch.load` would build it."""
    from ..hub import sha256sum
    from ..registry import get_entry, make_config

    cfg = make_config(model, **(overrides or {}))
    card = get_entry(model).card
    if weights is not None:
        if not Path(weights).is_file():
            raise FeatmatchError(f"weight file not found: {weights}")
        sha = sha256sum(weights)
    else:
        sha = card.weights.sha256 if card.weights is not None else ""
    return cfg, sha


def features_attrs(model: str, overrides: Optional[dict] = None, weights: Optional[str] = None) -> dict:
    cfg, sha = model_identity(model, overrides, weights)
    return store.identity_attrs("features", model, cfg, sha)


def features_record(f: Any) -> dict:
    """An unbatched :class:`~featmatch.types.Features` as an hloc record."""
    rec = {
        "keypoints": f.keypoints.detach().cpu().float().numpy(),
        "scores": f.keypoint_scores.detach().cpu().float().numpy(),
        "image_size": np.asarray([int(v) for v in f.image_size], np.int64),
    }
    d = f.descriptors.detach().cpu()
    rec["descriptors"] = (d.numpy() if d.dtype.is_floating_point is False else d.float().numpy()).T
    for k in ("scales", "orientations"):
        v = getattr(f, k)
        if v is not None:
            rec[k] = v.detach().cpu().float().numpy()
    return rec


@dataclass
class ExtractJob(ModelJob):
    """Extract one shard of images (picklable; the model loads on first use)."""

    batch_size: int = 4

    def check_model(self) -> None:
        from ..registry import get_entry

        if get_entry(self.model).card.kind != "sparse":
            raise UsageError(f"model '{self.model}' is a dense matcher: it has no per-image features; "
                             "use `featmatch match --model ... --images ... --pairs ...` (or reconstruct) instead")

    def run(self, names: list[str], progress: Any = None) -> int:
        import torch

        from ..image import to_tensor

        net = self.load()
        records: dict = {}
        skipped: dict = {}
        batch: list[tuple[str, torch.Tensor]] = []

        def flush() -> None:
            if not batch:
                return
            x = torch.cat([t for _, t in batch])
            feats = net.extract(x)
            for i, (name, _) in enumerate(batch):
                records[name] = features_record(feats if len(batch) == 1 else feats[i])
            if progress is not None:
                progress(len(batch))
            batch.clear()

        for name in names:
            try:
                t = to_tensor(os.path.join(self.images, name), name=name)
            except (ImageReadError, UsageError) as e:
                log.warning("skipping %s: %s", name, e)
                skipped[name] = str(e)
                if progress is not None:
                    progress(1)
                continue
            if batch and (len(batch) >= self.batch_size or batch[0][1].shape != t.shape):
                flush()
            batch.append((name, t))
        flush()
        store.ShardedH5(self.out, self.attrs, "keypoints").write_shard(records, skipped)
        return len(names)


@dataclass(frozen=True)
class ExtractResult:
    """What :func:`extract` did: the output file, the images stored, those computed by
    this call and those skipped (``{name: reason}``)."""

    path: Path
    num_images: int
    computed: int
    skipped: dict


def extract(images: Union[str, os.PathLike], out: Union[str, os.PathLike], model: str = "xfeat", *,
            overrides: Optional[dict] = None, weights: Optional[str] = None, device: Optional[str] = None,
            batch_size: int = 4, shard_size: int = 16, engine: str = "local", ray_address: Optional[str] = None,
            progress: bool = True, names: Optional[list[str]] = None) -> ExtractResult:
    """Extract local features of every image under ``images`` into ``out`` (hloc layout).

    Re-runs skip the images already in ``out`` or in finished shards of a killed run;
    a file made with another model / config / weights / format version is refused.

    Args:
        images: folder of photos (searched recursively).
        out: features file to create or complete (``.h5``).
        model: a sparse model name (``featmatch list``); with a learned matcher
            (``aliked.n16+lightglue``) the file records it and :func:`match_features` uses it.
        overrides: model config options, e.g. ``{"top_k": 2048}``; ``{"matcher": "lightglue"}``
            picks the learned matcher as :func:`featmatch.load` does.
        batch_size: images per forward pass (consecutive images of equal size).
        shard_size: images per shard file (the unit of resumption and of Ray tasks).
        engine: ``"local"`` or ``"ray"``.
        names: restrict to these image names (relative paths); default every image.
    """
    from ..registry import get_entry

    model, overrides = resolve_model(model, overrides)
    if get_entry(model).card.kind != "sparse":
        raise UsageError(f"model '{model}' is a dense matcher and has no per-image features; "
                         "use it with `featmatch match --model` or `featmatch reconstruct`")
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise UsageError(f"batch size must be a positive integer, got {batch_size!r}")
    all_names, not_images = list_images(images)
    if names is not None:
        missing = sorted(set(names) - set(all_names))
        if missing:
            raise UsageError(f"{len(missing)} requested images are not in {images}: {', '.join(missing[:3])}")
        all_names = list(names)
    attrs = features_attrs(model, overrides, weights)
    sh = store.ShardedH5(out, attrs, "keypoints")
    done, skipped_before = sh.done()
    todo = [n for n in all_names if n not in done]
    log.info("extract: %d images, %d already done, %d to compute", len(all_names), len(all_names) - len(todo), len(todo))
    job = ExtractJob(model, overrides, weights, device, str(images), str(out), attrs, batch_size)
    if todo and engine == "local":
        job.load()  # fail fast (missing weights) before the progress bar
    computed = run_shards(job, split(todo, shard_size), engine=engine, desc=f"extract {model}", unit="img",
                          progress=progress, ray_address=ray_address)
    new_skips = {k: v for k, v in not_images.items() if k not in skipped_before}
    if new_skips:  # non-image files: listed as skipped too
        sh.write_shard({}, new_skips)
    info = sh.merge()
    return ExtractResult(Path(out), info["records"], computed, info["skipped"])
