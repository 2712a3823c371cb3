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


@pytest.mark.parametrize("name, options, message", [
    ("xfeat", {"nms_kernel": 4}, "nms_kernel must be an odd integer"),  # used to fail in NMS with a size mismatch
    ("xfeat", {"nms_kernel": 0}, "nms_kernel must be an odd integer"),
    ("xfeat", {"top_k": 1.5}, "top_k must be an integer"),
    ("xfeat", {"detection_threshold": "high"}, "detection_threshold must be a number"),
    ("xfeat", {"resize": 0}, "resize must be a positive integer"),
    ("xfeat", {"max_pixels": 0}, "max_pixels must be a positive integer"),
    ("xfeat", {"matcher": {"min_score": "x"}}, "matcher.min_score must be a number"),
    ("xfeat-star", {"scales": (0, 1)}, "scales must be two positive numbers"),
    ("xfeat-star", {"scale_shares": (-1, 2)}, "scale_shares must be two numbers"),
    ("xfeat-star", {"fine_conf": "x"}, "fine_conf must be a number"),
    ("xfeat-star", {"refine_temperature": 0}, "refine_temperature must be > 0"),
    ("aliked.n16", {"top_k": "all"}, "top_k must be an integer"),
    ("aliked.n16", {"resize": -5}, "resize must be a positive integer"),
    ("sift", {"resize": 0}, "resize must be a positive integer"),
])
def test_invalid_option_values_fail_at_load_with_one_line(name, options, message):
    """Wrong values fail in load() with a one-line UsageError naming the option, not deep
    inside inference with a bare torch error."""
    with pytest.raises(UsageError, match=message) as e:
        featmatch.load(name, pretrained=False, **options)
    assert "\n" not in str(e.value)
