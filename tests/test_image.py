import numpy as np
import pytest
import torch

from featmatch.errors import ImageReadError, UsageError
from featmatch.image import fit_size, read_image, scale_points, to_tensor


def _write(path, arr):
    import cv2

    assert cv2.imwrite(str(path), arr)
    return path


def test_read_errors_are_one_line(tmp_path):
    with pytest.raises(ImageReadError, match="not found"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty"):
        read_image(tmp_path / "empty.png")
    (tmp_path / "text.png").write_text("hello, not an image")
    with pytest.raises(ImageReadError, match="cannot decode"):
        read_image(tmp_path / "text.png")
    good = _write(tmp_path / "g.png", np.zeros((10, 10, 3), np.uint8))
    (tmp_path / "trunc.png").write_bytes(good.read_bytes()[:20])
    with pytest.raises(ImageReadError, match="cannot decode"):
        read_image(tmp_path / "trunc.png")
    with pytest.raises(ImageReadError, match="directory"):
        read_image(tmp_path)
    for e in (ImageReadError,):
        try:
            read_image(tmp_path / "text.png")
        except e as err:
            assert "\n" not in str(err)


def test_read_kinds(tmp_path):
    rgb = np.zeros((5, 7, 3), np.uint8)
    rgb[..., 2] = 200  # BGR red channel on disk
    assert read_image(_write(tmp_path / "c.png", rgb))[0, 0].tolist() == [200, 0, 0]
    g16 = (np.arange(35).reshape(5, 7) * 1000).astype(np.uint16)
    a = read_image(_write(tmp_path / "g16.png", g16))
    assert a.dtype == np.float32 and a.shape == (5, 7) and abs(a.max() - 34000 / 65535) < 1e-6
    rgba = np.full((4, 4, 4), 255, np.uint8)
    assert read_image(_write(tmp_path / "a.png", rgba)).shape == (4, 4, 3)
    assert read_image(_write(tmp_path / "grey.png", np.zeros((3, 3), np.uint8))).shape == (3, 3)
    assert read_image(_write(tmp_path / "one.png", np.zeros((1, 1), np.uint8))).shape == (1, 1)


def test_to_tensor_accepts_and_rejects():
    assert to_tensor(np.zeros((4, 5), np.uint8)).shape == (1, 1, 4, 5)
    t = to_tensor(np.full((4, 5, 3), 255, np.uint8))
    assert t.shape == (1, 3, 4, 5) and t.dtype == torch.float32 and float(t.max()) == 1.0
    assert to_tensor(np.zeros((4, 5, 4), np.float32)).shape == (1, 3, 4, 5)
    assert to_tensor(torch.zeros(2, 3, 8, 8)).shape == (2, 3, 8, 8)
    assert to_tensor(torch.zeros(8, 8, dtype=torch.uint8)).shape == (1, 1, 8, 8)
    with pytest.raises(UsageError, match="divide by 255"):
        to_tensor(np.full((4, 4), 200.0, np.float32))
    with pytest.raises(UsageError, match="dtype"):
        to_tensor(np.zeros((4, 4), bool))
    with pytest.raises(UsageError, match="not an image"):
        to_tensor(np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(UsageError, match="empty"):
        to_tensor(np.zeros((0, 4), np.uint8))
    with pytest.raises(UsageError, match="NaN"):
        to_tensor(np.full((4, 4), np.nan, np.float32))
    with pytest.raises(UsageError, match="expected a path"):
        to_tensor(12)


def test_scale_convention():
    # a 2x downscale maps resized pixel 0 to original 0.5 (centre of the 2x2 block)
    p = scale_points(torch.tensor([[0.0, 0.0], [1.0, 2.0]]), (2.0, 2.0))
    assert p.tolist() == [[0.5, 0.5], [2.5, 4.5]]
    assert fit_size(100, 200, long_side=100) == (50, 100)
    assert fit_size(1000, 1000, max_pixels=10_000) == (100, 100)
