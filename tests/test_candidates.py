"""The candidate checkpoints in ``candidates/`` (featmatch-trained, outside the package): each file
is listed in candidates/README.md with its model and sha256, loads into that model and matches
a translated image; and scripts/export_xfeat.py writes files ``featmatch.load`` reads back."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

import featmatch
from featmatch import hub

from conftest import LOFTR_TINY_RAW, fixture_image, load_script

CANDIDATES = Path(__file__).resolve().parents[1] / "candidates"
#: table rows of candidates/README.md: | `file` | `model` | ... sha256 `HEX` ...
ROW = re.compile(r"^\|\s*`([^`]+\.pt)`\s*\|\s*`([^`]+)`\s*\|.*?sha256 `([0-9a-f]{64})`", re.M)
#: options per model for the small test images (loftr.tiny: no resize to 640, no LK step)
OPTIONS = {"loftr.tiny": LOFTR_TINY_RAW}


def listed() -> list[tuple[str, str, str]]:
    return ROW.findall((CANDIDATES / "README.md").read_text())


def test_every_candidate_file_is_listed_with_its_model_and_hash():
    rows = listed()
    assert {f for f, _, _ in rows} == {p.name for p in CANDIDATES.glob("*.pt")}
    for name, model, digest in rows:
        assert model in featmatch.list_models(), name
        assert hub.sha256sum(CANDIDATES / name) == digest, f"{name}: sha256 differs from candidates/README.md"


@pytest.mark.parametrize("name,model", [(f, m) for f, m, _ in listed()])
def test_candidate_loads_and_matches_a_translation(name, model):
    matcher = featmatch.load(model, weights=CANDIDATES / name, **OPTIONS.get(model, {}))
    img = fixture_image("xfeat_a.png")[:224, :288]
    moved = np.roll(img, (16, 8), axis=(0, 1))  # whole 8x8 cells: shift (8, 16) px
    m = matcher.match(img, moved)
    d = (m.points1 - m.points0).numpy() - [8, 16]
    assert len(m) > 50 and (np.abs(d).max(1) < 1.0).mean() > 0.8, name


def test_export_xfeat_writes_float16_that_load_reads(tmp_path):
    export = load_script("export_xfeat")
    torch.manual_seed(0)
    net = featmatch.load("xfeat", pretrained=False).net
    run = tmp_path / "model.pt"
    torch.save(net.state_dict(), run)  # what `featmatch train xfeat` writes
    out = tmp_path / "out" / "x.pt"
    digest = export.export(run, out)
    assert digest == hub.sha256sum(out) and not list(out.parent.glob("*.tmp*"))
    stored = torch.load(out)
    assert all(v.dtype == torch.float16 for k, v in stored.items() if v.is_floating_point())
    loaded = featmatch.load("xfeat", weights=out).net.state_dict()
    for k, v in net.state_dict().items():
        w = loaded[k]
        assert w.dtype == v.dtype, k  # cast back to float32
        if v.is_floating_point():
            torch.testing.assert_close(w, v.half().float(), rtol=0, atol=0)


def test_export_xfeat_refuses_other_weights(tmp_path):
    export = load_script("export_xfeat")
    bad = tmp_path / "bad.pt"
    torch.save({"foo": torch.zeros(3)}, bad)
    with pytest.raises(featmatch.WeightsError, match="do not fit"):
        export.export(bad, tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()
