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


def _lines_drawn(img, colour_test):
    return int(colour_test(img).sum())


def test_max_lines_and_inliers_only():
    """Issue 13, point 15: --viz-max-lines / --viz-inliers-only."""
    a = np.zeros((100, 100, 3), np.uint8)
    rng = np.random.default_rng(0)
    p0 = rng.uniform(5, 95, (200, 2))
    p1 = rng.uniform(5, 95, (200, 2))
    inl = np.arange(200) % 2 == 0
    red = lambda im: (im[..., 0] > 150) & (im[..., 1] < 100)  # noqa: E731
    green = lambda im: (im[..., 1] > 150) & (im[..., 0] < 100)  # noqa: E731
    full = draw_matches(a, a, p0, p1, inl, max_size=None)
    few = draw_matches(a, a, p0, p1, inl, max_lines=10, max_size=None)
    none = draw_matches(a, a, p0, p1, inl, max_lines=0, max_size=None)
    assert _lines_drawn(few, red) < _lines_drawn(full, red) and not red(none).any() and not green(none).any()
    only = draw_matches(a, a, p0, p1, inl, inliers_only=True, max_size=None)
    assert not red(only).any() and green(only).any()
    with pytest.raises(UsageError, match="inliers_only needs an inlier mask"):
        draw_matches(a, a, p0, p1, None, inliers_only=True)
    with pytest.raises(UsageError, match="inliers has 3 entries for 200 matches"):
        draw_matches(a, a, p0, p1, inl[:3])


def test_output_size_is_bounded_and_title_readable(tmp_path):
    """An 8000x6000 pair gave a 16010x6000 canvas (113 MB PNG); now at most max_size, with
    the points scaled along and a title that grows with the canvas."""
    big = np.zeros((6000, 8000), np.uint8)
    p = np.array([[7999.0, 5999.0], [3000.0, 5000.0]])
    img = draw_matches(big, big, p, p, title="xfeat: 2 matches")
    assert max(img.shape[:2]) <= 2400 and img.shape[1] == 2400
    sc = (2400 - 10) / 16000  # the gap between the images is not scaled
    x = round((7999 + 0.5) * sc - 0.5)
    assert (img[-6:, x - 4:x + 1] > 100).any()  # the bottom-right point of image 0 drawn at its scaled place
    small = draw_matches(big, big, p, p, title="xfeat: 2 matches", max_size=800)
    assert small.shape[1] == 800

    def title_height(canvas):
        rows = np.flatnonzero((canvas[:300, :300] > 200).all(-1).any(1))  # white text on the black image 0
        return rows.max() - rows.min()

    assert title_height(img) > 2 * title_height(small) > 0  # text scales with the canvas
    out = tmp_path / "big.png"
    save_matches_plot(out, big, big, p, p)
    assert out.stat().st_size < 5_000_000
