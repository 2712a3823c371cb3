import numpy as np
import pytest

from featmatch.errors import UsageError
from featmatch.viz import draw_matches, save_matches_plot


def test_draw_colours_inliers_and_outliers():
    a = np.zeros((40, 50, 3), np.uint8)
    b = np.zeros((30, 60), np.uint8)
    p = np.array([[10.0, 10.0], [30.0, 20.0]])
    img = draw_matches(a, b, p, p, inliers=np.array([True, False]), gap=10)
    assert img.shape == (40, 50 + 10 + 60, 3)
    green = (img[..., 1] > 150) & (img[..., 0] < 100)
    red = (img[..., 0] > 150) & (img[..., 1] < 100)
    assert green.any() and red.any()


def test_save_is_atomic(tmp_path):
    a = np.zeros((20, 20, 3), np.uint8)
    out = tmp_path / "m.png"
    save_matches_plot(out, a, a, np.zeros((0, 2)), np.zeros((0, 2)))
    assert out.is_file()
    with pytest.raises(UsageError):
        save_matches_plot(tmp_path / "m.unknownext", a, a, np.zeros((0, 2)), np.zeros((0, 2)))
    assert [p.name for p in tmp_path.iterdir()] == ["m.png"]
    with pytest.raises(UsageError, match="differ in length"):
        draw_matches(a, a, np.zeros((2, 2)), np.zeros((3, 2)))


def test_outputs_get_normal_permissions(tmp_path):
    import os

    from featmatch.io import atomic_path

    out = tmp_path / "f.txt"
    with atomic_path(out) as tmp:
        tmp.write_text("x")
    umask = os.umask(0)
    os.umask(umask)
    assert (out.stat().st_mode & 0o777) == (0o666 & ~umask)
