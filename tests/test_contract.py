"""Contract suite over every registered model, random weights, no network."""

import numpy as np
import pytest
import torch

import featmatch
from featmatch.config import check_types
from featmatch.errors import UsageError
from featmatch.models.base import DenseMatcher
from featmatch.registry import make_config
from featmatch.types import Features, Matches

from conftest import textured


@pytest.fixture(scope="module", params=featmatch.list_models())
def model(request):
    torch.manual_seed(0)
    return featmatch.load(request.param, pretrained=False)


def test_match_contract(model):
    a = textured(160, 224, seed=1)
    b = np.roll(a, (5, 7), axis=(0, 1))
    m = model.match(a, b)
    assert isinstance(m, Matches)
    k = len(m)
    assert m.points0.shape == (k, 2) and m.points1.shape == (k, 2) and m.scores.shape == (k,)
    if k:
        assert float(m.points0[:, 0].min()) >= -0.5 and float(m.points0[:, 0].max()) <= 224 - 0.5
        assert float(m.points0[:, 1].max()) <= 160 - 0.5


def test_extract_contract(model):
    if isinstance(model, DenseMatcher):  # one line saying what to use instead (issue 13, point 6)
        with pytest.raises(UsageError, match=r"dense matcher and has no extract\(\).*match\(image0, image1\)") as e:
            model.extract(textured(100, 130, seed=2))
        assert "\n" not in str(e.value)
        return
    f = model.extract(textured(100, 130, seed=2))
    assert isinstance(f, Features) and not f.is_batched
    assert f.image_size == (130, 100)
    if len(f) and f.descriptors.is_floating_point():
        assert torch.allclose(f.descriptors.norm(dim=-1), torch.ones(len(f)), atol=1e-4)
    if len(f):
        assert (f.keypoints >= -0.5).all() and (f.keypoints[:, 0] <= 129.5).all() and (f.keypoints[:, 1] <= 99.5).all()


def test_blank_and_tiny_images_give_empty_results(model, caplog):
    blank = np.full((64, 64, 3), 127, np.uint8)
    m = model.match(blank, blank)  # any count is acceptable; it must not crash
    assert isinstance(m, Matches) and m.points0.shape[1:] == (2,)
    tiny = np.zeros((1, 1), np.uint8)
    caplog.clear()
    with caplog.at_level("WARNING", logger="featmatch"):
        m = model.match(tiny, tiny)
    assert len(m) == 0
    # every model, sparse or dense, resizing or not, warns the same way (issue 13, points 3, 18)
    msgs = [r.getMessage() for r in caplog.records if "too small" in r.getMessage()]
    assert msgs and all(s.startswith(("image0: 1x1 px image", "image1: 1x1 px image")) for s in msgs), msgs


def test_config_values_match_their_declared_types(model):
    """Every option of every model is checked against its dataclass field type (issue 13,
    point 1): the defaults pass, and a wrong type for each field is refused at load()."""
    import dataclasses
    import typing

    check_types(model.config)
    name = model.card.name
    hints = typing.get_type_hints(type(model.config))
    for f in dataclasses.fields(model.config):
        tp = hints[f.name]
        takes_str = tp is str or str in typing.get_args(tp)  # str or Optional[str]: a float is wrong
        wrong = 0.5 if tp is bool or takes_str else "x"
        if dataclasses.is_dataclass(tp):
            wrong = "x"
        with pytest.raises(UsageError, match=f"'{f.name}'"):
            make_config(name, **{f.name: wrong})
