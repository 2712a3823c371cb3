import dataclasses

import pytest

import featmatch
from featmatch.config import from_dict
from featmatch.errors import UsageError
from featmatch.models.xfeat import XFeatConfig


def test_config_rejects_unknown_key_with_suggestion():
    with pytest.raises(UsageError, match="top_kk.*did you mean 'top_k'"):
        from_dict(XFeatConfig, {"top_kk": 3})


def test_config_nested_and_frozen():
    cfg = from_dict(XFeatConfig, {"top_k": 10, "matcher": {"min_score": 0.82}})
    assert cfg.top_k == 10 and cfg.matcher.min_score == 0.82
    with pytest.raises(UsageError, match="matcher.ratoi"):
        from_dict(XFeatConfig, {"matcher": {"ratoi": 0.8}})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.top_k = 3  # type: ignore[misc]
    assert XFeatConfig().matcher.min_score is None  # defaults untouched


def test_registry_names_cards_and_unknown_model():
    names = featmatch.list_models()
    assert {"xfeat", "xfeat-star"} <= set(names)
    card = featmatch.model_card("xfeat")
    assert card.code_license == "Apache-2.0" and card.weights.license == "Apache-2.0"
    with pytest.raises(UsageError, match="did you mean 'xfeat'"):
        featmatch.load("xfet")
    with pytest.raises(UsageError, match="unknown option 'topk'"):
        featmatch.load("xfeat", pretrained=False, topk=5)


def test_load_without_weights_names_download_command(tmp_path, monkeypatch):
    monkeypatch.setenv("FEATMATCH_HOME", str(tmp_path))
    monkeypatch.setattr("featmatch.hub._installed_path", lambda spec: None)
    with pytest.raises(featmatch.WeightsNotFoundError, match="featmatch download xfeat"):
        featmatch.load("xfeat")
