import json

import cv2
import numpy as np
import pytest
import torch

from featmatch.data import DepthPairs, SyntheticConfig, SyntheticPairs
from featmatch.errors import FeatmatchError
from featmatch.geometry.warp import warp_points_depth, warp_points_homography

from conftest import textured


@pytest.fixture
def photos(tmp_path):
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"p{i}.png"), textured(200, 260, seed=i))
    return tmp_path


def test_synthetic_pairs_deterministic_and_consistent(photos):
    ds = SyntheticPairs(photos, SyntheticConfig(size=(128, 96), seed=3, noise_std=0.0, blur_prob=0.0,
                                                brightness=0.0, contrast=0.0, gamma=(1.0, 1.0)))
    a, b = ds[7], ds[7]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(ds[8]["image0"], a["image0"])
    assert a["image0"].shape == (3, 96, 128) and a["valid1"].shape == (96, 128)
    # image 1 equals image 0 warped by H where valid (up to interpolation)
    img0 = (a["image0"].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    warped = cv2.warpPerspective(img0, a["H_0to1"].double().numpy(), (128, 96)).astype(np.float32) / 255
    img1 = a["image1"].permute(1, 2, 0).numpy()
    inner = cv2.erode(a["valid1"].numpy().astype(np.uint8), np.ones((9, 9))) > 0
    inner &= cv2.erode((cv2.warpPerspective(np.ones((96, 128), np.uint8), a["H_0to1"].double().numpy(), (128, 96)) > 0).astype(np.uint8), np.ones((9, 9))) > 0
    assert inner.sum() > 1000
    assert np.abs(warped - img1)[inner].mean() < 0.04


def test_synthetic_pairs_in_dataloader_workers(photos):
    ds = SyntheticPairs(photos, SyntheticConfig(size=(64, 64)))
    dl = torch.utils.data.DataLoader(ds, batch_size=2, sampler=range(4), num_workers=2)
    batches = list(dl)
    assert torch.equal(batches[1]["image1"][0], ds[2]["image1"])


def test_missing_folder(tmp_path):
    with pytest.raises(FeatmatchError, match="no images"):
        SyntheticPairs(tmp_path)
    with pytest.raises(FeatmatchError, match="not found"):
        SyntheticPairs(tmp_path / "nope")


def _plane_scene(tmp_path):
    """A textured fronto-parallel plane at depth 4 with a box at depth 2 in front of it,
    seen by two cameras 0.5 apart (pure x translation)."""
    h, w = 96, 128
    K = np.array([[100.0, 0, 63.5], [0, 100, 47.5], [0, 0, 1]])
    depth0 = np.full((h, w), 4.0, np.float32)
    depth1 = np.full((h, w), 4.0, np.float32)
    depth1[30:60, 40:70] = 2.0  # occluder visible only in image 1
    T = np.eye(4)
    T[0, 3] = -0.5  # camera 1 is 0.5 to the right: X1 = X0 - 0.5
    for name, arr in (("d0.npy", depth0), ("d1.npy", depth1)):
        np.save(tmp_path / name, arr)
    cv2.imwrite(str(tmp_path / "i0.png"), textured(h, w, seed=1))
    cv2.imwrite(str(tmp_path / "i1.png"), textured(h, w, seed=1))
    pairs = [{"image0": "i0.png", "image1": "i1.png", "depth0": "d0.npy", "depth1": "d1.npy",
              "K0": K.ravel().tolist(), "K1": K.ravel().tolist(), "T_0to1": T.ravel().tolist()}]
    (tmp_path / "pairs.json").write_text(json.dumps(pairs))
    return K, T


def test_depth_warp_matches_plane_homography_and_flags_occlusion(tmp_path):
    K, T = _plane_scene(tmp_path)
    item = DepthPairs(tmp_path, size=None)[0]
    pts = torch.tensor([[[10.0, 10.0], [80.0, 40.0], [120.0, 90.0]]])
    p1, ok = warp_points_depth(pts, item["depth0"][None], item["depth1"][None], item["K0"][None],
                               item["K1"][None], item["T_0to1"][None])
    # plane at z=4, x shift -0.5 -> pixels move by -f * 0.5 / 4 = -12.5 px
    assert torch.allclose(p1[0, 0], torch.tensor([-2.5, 10.0])) and not ok[0, 0]  # leaves the image
    assert torch.allclose(p1[0, 1], torch.tensor([67.5, 40.0])) and not ok[0, 1]  # occluded by the box
    assert torch.allclose(p1[0, 2], torch.tensor([107.5, 90.0])) and ok[0, 2]
    H = torch.tensor([[[1.0, 0, -12.5], [0, 1, 0], [0, 0, 1]]])
    ph, _ = warp_points_homography(pts, H)
    assert torch.allclose(ph, p1)


def test_depth_pairs_bad_root(tmp_path):
    with pytest.raises(FeatmatchError, match="pairs.json"):
        DepthPairs(tmp_path)
    (tmp_path / "pairs.json").write_text('[{"image0": "a.png"}]')
    with pytest.raises(FeatmatchError, match="lacks"):
        DepthPairs(tmp_path)


def test_list_images_recurses_into_subfolders_and_skips_hidden(tmp_path):
    from featmatch.data import list_images

    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / ".hidden").mkdir()
    for p in ["top.png", "a/one.jpg", "a/b/two.PNG", ".hidden/x.png", "a/notes.txt"]:
        (tmp_path / p).write_bytes(b"x")
    names = [f.relative_to(tmp_path).as_posix() for f in list_images(tmp_path)]
    assert names == ["a/b/two.PNG", "a/one.jpg", "top.png"]
    assert [f.name for f in list_images(tmp_path, recursive=False)] == ["top.png"]
    with pytest.raises(FeatmatchError, match="no images"):
        list_images(tmp_path / "a" / "b" / "empty") if (tmp_path / "a/b/empty").mkdir() is None else None
