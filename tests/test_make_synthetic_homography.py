"""scripts/make_synthetic_homography.py: a held-out homography root from a photo folder."""

import cv2
import numpy as np
import pytest

from featmatch.eval.data import homography_pairs

from conftest import load_script


def _script():
    return load_script("make_synthetic_homography")


@pytest.fixture()
def photos(tmp_path):
    d = tmp_path / "photos"
    (d / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(4):
        img = cv2.GaussianBlur(rng.integers(0, 255, (150, 200, 3)).astype(np.uint8), (0, 0), 2)
        cv2.imwrite(str(d / ("sub" if i % 2 else "") / f"p{i}.png"), img)
    return d


def test_writes_a_homography_root_that_the_benchmarks_read(photos, tmp_path):
    out = tmp_path / "root"
    args = ["--images", str(photos), "--out", str(out), "--every", "1", "--sequences", "3", "--warps", "2",
            "--size", "96x64", "--rotation", "0", "--scale", "1,1", "--perspective", "0"]
    assert _script().main(args) == 0
    pairs = homography_pairs(out)
    assert len(pairs) == 6 and sorted({p.sequence for p in pairs}) == ["syn_000", "syn_001", "syn_002"]
    for p in pairs:
        a, b = cv2.imread(str(p.image0)), cv2.imread(str(p.image1))
        assert a.shape == b.shape == (64, 96, 3)
        # no rotation, scale or perspective: H is a pure translation
        assert np.allclose(p.H_0to1[:2, :2], np.eye(2)) and np.allclose(p.H_0to1[2], [0, 0, 1])
    # seeded: the same command writes the same files
    out2 = tmp_path / "root2"
    assert _script().main(args[:3] + [str(out2)] + args[4:]) == 0
    for f in out.rglob("*"):
        if f.is_file():
            assert f.read_bytes() == (out2 / f.relative_to(out)).read_bytes()
    assert not list(tmp_path.glob("root.*")), "temporary folder left behind"


def test_refuses_an_existing_output_and_bad_options(photos, tmp_path):
    mod = _script()
    out = tmp_path / "exists"
    out.mkdir()
    with pytest.raises(SystemExit, match="exists"):
        mod.main(["--images", str(photos), "--out", str(out)])
    with pytest.raises(SystemExit, match="--size"):
        mod.main(["--images", str(photos), "--out", str(tmp_path / "n"), "--size", "big"])
    with pytest.raises(SystemExit, match="no images"):
        mod.main(["--images", str(tmp_path / "exists"), "--out", str(tmp_path / "n")])
    assert not (tmp_path / "n").exists()
