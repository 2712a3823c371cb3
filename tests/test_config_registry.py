import dataclasses

import numpy as np
import pytest

import featmatch
from featmatch.config import from_dict, parse_assignments
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
    ("xfeat", {"top_k": 1.5}, "option 'top_k' must be an integer, got 1.5"),
    ("xfeat", {"detection_threshold": "high"}, "option 'detection_threshold' must be a number"),
    ("xfeat", {"resize": 0}, "resize must be an integer >= 32"),
    ("xfeat", {"max_pixels": 0}, "max_pixels must be an integer >= 1024"),
    ("xfeat", {"matcher": {"min_score": "x"}}, "option 'matcher.min_score' must be a number or None"),
    ("xfeat-star", {"scales": (0, 1)}, "scales must be two positive numbers"),
    ("xfeat-star", {"scale_shares": (-1, 2)}, "scale_shares must be two numbers"),
    ("xfeat-star", {"fine_conf": "x"}, "option 'fine_conf' must be a number"),
    ("xfeat-star", {"refine_temperature": 0}, "refine_temperature must be > 0"),
    ("aliked.n16", {"top_k": "all"}, "option 'top_k' must be an integer"),
    ("aliked.n16", {"resize": -5}, "resize must be an integer >= 32"),
    ("sift", {"resize": 0}, "resize must be an integer >= 32"),
    # issue 13, point 1: booleans and strings are checked against the declared type
    ("xfeat", {"official_compat": "maybe"}, "option 'official_compat' must be true or false, got 'maybe'"),
    ("xfeat", {"official_compat": "False"}, "option 'official_compat' must be true or false"),
    ("xfeat", {"official_compat": 1}, "option 'official_compat' must be true or false"),
    ("sift", {"rootsift": "yes"}, "option 'rootsift' must be true or false, got 'yes'"),
    ("xfeat", {"top_k": True}, "option 'top_k' must be an integer, got True"),
    ("xfeat-star", {"refine_decoder": 3}, "option 'refine_decoder' must be a string"),
    ("loftr.tiny", {"block_dims": (32, 64)}, "option 'block_dims' expects 3 values"),
    ("xfeat", {"matcher": {"mutual": "no"}}, "option 'matcher.mutual' must be true or false"),
    # issue 13, point 2: nonsense values
    ("xfeat", {"top_k": -5}, "top_k must be an integer >= 1, got -5"),
    ("xfeat", {"top_k": 0}, "top_k must be an integer >= 1, got 0"),
    ("aliked.n16", {"top_k": 0}, r"top_k must be an integer >= 1 \(or -1: no limit\), got 0"),
    ("aliked.n16", {"top_k": -5}, r"or -1: no limit"),
    ("xfeat", {"resize": 10}, "resize must be an integer >= 32"),
    ("loftr.tiny", {"resize": 10}, "resize must be an integer >= 32"),
    ("xfeat", {"detection_threshold": -3}, "detection_threshold must be a number >= 0"),
    ("aliked.n16", {"detection_threshold": -3}, "detection_threshold must be a number >= 0"),
    ("xfeat", {"detection_threshold": 1.0}, "detection_threshold must be below 1"),
    ("sift", {"matcher": {"ratio": 1.5}}, r"matcher.ratio .* must be in \(0, 1\]"),
    ("xfeat", {"matcher": {"min_score": 2}}, r"matcher.min_score is a cosine similarity in \[-1, 1\]"),
    ("orb", {"matcher": {"max_distance": -1}}, "matcher.max_distance must be >= 0"),
    ("xfeat-star", {"fine_conf": 1.0}, r"fine_conf must be a number in \[0, 1\)"),
    ("loftr.tiny", {"threshold": -0.5}, r"threshold must be in \[0, 1\)"),
    # issue 13, point 4: a group of options given one value
    ("xfeat", {"matcher": 5}, r"option 'matcher' is a group of options \(MNNConfig\).*matcher.metric="),
    # a string names a learned matcher (issue 14); a wrong one lists those the model has
    ("xfeat", {"matcher": "lightglue"}, r"model 'xfeat' has no matcher 'lightglue'; use one of: mnn, lighterglue"),
    ("sift", {"matcher": "lightglue"}, r"model 'sift' has no matcher 'lightglue'; use one of: mnn"),
])
def test_invalid_option_values_fail_at_load_with_one_line(name, options, message):
    """Wrong values fail in load() with a one-line UsageError naming the option, not deep
    inside inference with a bare torch error."""
    with pytest.raises(UsageError, match=message) as e:
        featmatch.load(name, pretrained=False, **options)
    assert "\n" not in str(e.value)


def test_configs_built_directly_are_type_checked_too():
    """A config built by hand (not through from_dict) is checked when the model is built."""
    from featmatch.models.classical import SIFT, SIFTConfig
    from featmatch.models.xfeat import XFeat

    with pytest.raises(UsageError, match="option 'official_compat' must be true or false"):
        XFeat(XFeatConfig(official_compat="maybe"))
    with pytest.raises(UsageError, match="option 'rootsift' must be true or false"):
        SIFT(SIFTConfig(rootsift="yes"))
    ok = from_dict(XFeatConfig, {"official_compat": np.bool_(True), "top_k": np.int64(7), "matcher": {"min_score": 1}})
    assert ok.official_compat is True and ok.top_k == 7 and isinstance(ok.matcher.min_score, float)


@pytest.mark.parametrize("text, value", [("true", True), ("TRUE", True), ("1", True), ("False", False),
                                         ("false", False), ("0", False)])
def test_text_booleans_parsed_once(text, value):
    """--set official_compat=False used to turn the option on (a non-empty string)."""
    out = parse_assignments(XFeatConfig, [f"official_compat={text}"])
    assert out == {"official_compat": value}


@pytest.mark.parametrize("item, message", [
    ("official_compat=no", "must be true or false \\(or 1/0\\), got 'no'"),
    ("official_compat=yes", "must be true or false"),
    ("official_compat=", "must be true or false"),
    ("top_k=5.5", "option 'top_k' must be an integer, got '5.5'"),
    ("detection_threshold=nan", "must be a number"),
    ("matcher=lightglue", "option 'matcher' is a group of options"),
    ("matcher.ratoi=0.8", "unknown option 'matcher.ratio'|did you mean 'ratio'"),
    ("top_k.x=1", "option 'top_k' has no sub-options"),
    ("top_k", "expects KEY=VALUE"),
])
def test_text_values_refused_with_one_line(item, message):
    with pytest.raises(UsageError, match=message) as e:
        parse_assignments(XFeatConfig, [item])
    assert "\n" not in str(e.value)


def test_text_values_of_every_kind():
    from featmatch.models.xfeat import XFeatStarConfig

    out = parse_assignments(XFeatStarConfig, ["scales=0.5,1.2", "scale_shares=[0.3, 0.7]", "resize=none",
                                              "refine_decoder=centered", "fine_conf=0.3"])
    assert out == {"scales": (0.5, 1.2), "scale_shares": (0.3, 0.7), "resize": None,
                   "refine_decoder": "centered", "fine_conf": 0.3}
    out = parse_assignments(XFeatConfig, ["matcher.ratio=0.8", "matcher.min_score=None", "resize=640"])
    assert out == {"matcher": {"ratio": 0.8, "min_score": None}, "resize": 640}
    cfg = from_dict(XFeatConfig, out)
    assert cfg.matcher.ratio == 0.8 and cfg.resize == 640


def test_device_checked_at_load():
    """Issue 13, point 5: unknown or unavailable devices fail at load() with one line."""
    import torch

    with pytest.raises(UsageError, match="unknown device 'tpu'"):
        featmatch.load("sift", device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="device 'cuda' is not available"):
            featmatch.load("xfeat", pretrained=False, device="cuda")
    m = featmatch.load("xfeat", pretrained=False, device="auto")
    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert m.device.type == expected


def test_warnings_name_the_image_the_same_way_for_sparse_and_dense(caplog):
    """Issue 13, point 18: warnings said `image:` or `image0:` depending on the model."""
    img = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (64, 1))
    for name in ("sift", "xfeat-star"):
        model = featmatch.load(name, pretrained=False, max_pixels=1024)
        caplog.clear()
        with caplog.at_level("WARNING", logger="featmatch"):
            model.match(img, img)
        msgs = [r.getMessage() for r in caplog.records if "more than 1024 pixels" in r.getMessage()]
        assert [m.split(":")[0] for m in msgs] == ["image0", "image1"], (name, msgs)
