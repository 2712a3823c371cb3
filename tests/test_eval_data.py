"""Benchmark data readers on synthetic layouts; also the synthetic-data helpers that the
other ``test_eval_*`` modules import (warped images with a known homography, a rendered
two-view scene with a known pose)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from featmatch.eval.data import DataError, homography_pairs, pose_pairs, read_homography

from conftest import textured


# ----------------------------------------------------------------------------- synthetic data
def random_homography(rng: np.random.Generator, w: int, h: int, strength: float = 0.08) -> np.ndarray:
    """A mild homography mapping a w x h image mostly inside itself (corner jitter)."""
    import cv2

    src = np.float32([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]])
    dst = src + rng.uniform(-strength, strength, (4, 2)).astype(np.float32) * np.float32([w, h])
    return cv2.getPerspectiveTransform(src, dst).astype(np.float64)


def make_hpatches(root: Path, sequences=("i_light", "v_view"), n_images: int = 3, size=(200, 150), seed: int = 0) -> Path:
    """HPatches-layout folders: ``<seq>/1..n.png`` + ``H_1_k``; image k = warp of image 1
    (illumination sequences: a brightness change and a small warp)."""
    import cv2

    w, h = size
    rng = np.random.default_rng(seed)
    for si, name in enumerate(sequences):
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        base = textured(h, w, seed=seed + 10 * si)
        cv2.imwrite(str(d / "1.png"), base[..., ::-1])
        for k in range(2, n_images + 1):
            H = random_homography(rng, w, h, 0.02 if name.startswith("i_") else 0.08)
            img = cv2.warpPerspective(base, H, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
            if name.startswith("i_"):
                img = np.clip(img.astype(np.float32) * (0.7 + 0.1 * k), 0, 255).astype(np.uint8)
            cv2.imwrite(str(d / f"{k}.png"), img[..., ::-1])
            np.savetxt(d / f"H_1_{k}", H)
    return root


def _rot(axis: str, deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    c, s = np.cos(a), np.sin(a)
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


SCENE_K = np.array([[170.0, 0, 99.5], [0, 170.0, 74.5], [0, 0, 1]])


def scene_depth_surface(x: np.ndarray) -> np.ndarray:
    """The scene: two textured planes meeting at x = 0, z = 4 + 0.8 |x| (an open book)."""
    return 4.0 + 0.8 * np.abs(x)


def render_view(R: np.ndarray, t: np.ndarray, texture: np.ndarray, size=(200, 150)) -> np.ndarray:
    """Render the two-plane scene seen by a camera ``X_cam = R X + t`` with :data:`SCENE_K`."""
    import cv2

    w, h = size
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    rays = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(SCENE_K).T @ R  # world directions
    o = -R.T @ t
    best = np.full(u.shape, np.inf)
    for sgn in (1.0, -1.0):  # plane z - 0.8 * sgn * x = 4, valid where sgn * x >= 0
        den = rays[..., 2] - 0.8 * sgn * rays[..., 0]
        with np.errstate(divide="ignore", invalid="ignore"):
            s = (4.0 - (o[2] - 0.8 * sgn * o[0])) / den
        x = o[0] + s * rays[..., 0]
        ok = (s > 0) & (sgn * x >= -1e-9)
        best = np.where(ok & (s < best), s, best)
    pts = o + best[..., None] * rays
    th, tw = texture.shape[:2]
    mx = ((pts[..., 0] + 2.5) / 5.0 * (tw - 1)).astype(np.float32)  # texture spans x, y in [-2.5, 2.5]
    my = ((pts[..., 1] + 2.0) / 4.0 * (th - 1)).astype(np.float32)
    return cv2.remap(texture, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def scene_pose(deg: float = 6.0) -> np.ndarray:
    """``T_0to1`` of the second camera: rotated about y, moved sideways."""
    R = _rot("y", -deg) @ _rot("x", 2.0)
    C = np.array([0.5, 0.08, 0.1])
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = -R @ C
    return T


def project_scene_points(T: np.ndarray, n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Exact correspondences: scene points visible in both views, projected."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.5, 1.5, n)
    y = rng.uniform(-1.0, 1.0, n)
    X = np.stack([x, y, scene_depth_surface(x)], 1)
    p0 = X @ SCENE_K.T
    X1 = X @ T[:3, :3].T + T[:3, 3]
    p1 = X1 @ SCENE_K.T
    return p0[:, :2] / p0[:, 2:], p1[:, :2] / p1[:, 2:]


def make_pose_scene(root: Path, n_pairs: int = 2, size=(200, 150), fmt: str = "txt") -> Path:
    """``root/pairs.txt|json`` + ``root/images/scene/*.png``: rendered pairs, known pose."""
    import cv2

    img_dir = root / "images" / "scene"
    img_dir.mkdir(parents=True, exist_ok=True)
    texture = textured(300, 380, seed=7)
    lines, items = [], []
    for i in range(n_pairs):
        T = scene_pose(5.0 + 3 * i)
        a = render_view(np.eye(3), np.zeros(3), texture, size)
        b = render_view(T[:3, :3], T[:3, 3], texture, size)
        n0, n1 = f"scene/{i}_a.png", f"scene/{i}_b.png"
        cv2.imwrite(str(root / "images" / n0), a[..., ::-1])
        cv2.imwrite(str(root / "images" / n1), b[..., ::-1])
        K = " ".join(f"{v:.10g}" for v in SCENE_K.ravel())
        lines.append(f"{n0} {n1} {K} {K} " + " ".join(f"{v:.12g}" for v in T.ravel()))
        items.append({"image0": n0, "image1": n1, "K0": SCENE_K.tolist(), "K1": SCENE_K.tolist(),
                      "T_0to1": T.tolist(), "dataset": "synthetic"})
    if fmt == "txt":
        (root / "pairs.txt").write_text("# image0 image1 K0 K1 T_0to1\n" + "\n".join(lines) + "\n")
    else:
        (root / "pairs.json").write_text(json.dumps(items))
    return root


# ----------------------------------------------------------------------------- homography layout
def test_homography_layout_pairs_and_splits(tmp_path):
    make_hpatches(tmp_path, sequences=("i_a", "v_b", "oxford_c"), n_images=3)
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "notes").mkdir()  # no images named by index: skipped
    (tmp_path / "index.json").write_text("{}")
    pairs = homography_pairs(tmp_path)
    assert [p.key for p in pairs] == ["i_a/1-2", "i_a/1-3", "oxford_c/1-2", "oxford_c/1-3", "v_b/1-2", "v_b/1-3"]
    assert [p.split for p in pairs][::2] == ["illumination", "other", "viewpoint"]
    H = np.loadtxt(tmp_path / "v_b" / "H_1_2")
    assert np.allclose(pairs[-2].H_0to1, H / H[2, 2])
    single = homography_pairs(tmp_path / "v_b")  # a sequence folder works as a root too
    assert [p.key for p in single] == ["v_b/1-2", "v_b/1-3"]


def test_homography_layout_errors_name_the_path(tmp_path):
    with pytest.raises(DataError, match="not found.*expected HPatches layout"):
        homography_pairs(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no homography sequences in .*empty"):
        homography_pairs(tmp_path / "empty")
    make_hpatches(tmp_path / "r", sequences=("v_x",), n_images=3)
    (tmp_path / "r" / "v_x" / "H_1_3").unlink()
    with pytest.raises(DataError, match=r"missing homography .*v_x/H_1_3"):
        homography_pairs(tmp_path / "r")
    (tmp_path / "r" / "v_x" / "H_1_3").write_text("1 2 3\n4 5\n")
    with pytest.raises(DataError, match=r"H_1_3"):
        homography_pairs(tmp_path / "r")
    np.savetxt(tmp_path / "r" / "v_x" / "H_1_3", np.eye(3))
    np.savetxt(tmp_path / "r" / "v_x" / "H_1_4", np.eye(3))
    with pytest.raises(DataError, match=r"H_1_4 has no image 4"):
        homography_pairs(tmp_path / "r")
    (tmp_path / "r" / "v_x" / "H_1_4").unlink()
    for f in (tmp_path / "r" / "v_x").glob("H_*"):
        f.unlink()
    with pytest.raises(DataError, match=r"no H_1_k files .*v_x"):
        homography_pairs(tmp_path / "r")


def test_read_homography_rejects_singular(tmp_path):
    p = tmp_path / "H"
    np.savetxt(p, np.zeros((3, 3)))
    with pytest.raises(DataError, match="singular"):
        read_homography(p)


# ----------------------------------------------------------------------------- pose layout
@pytest.mark.parametrize("fmt", ["txt", "json"])
def test_pose_pairs_both_formats(tmp_path, fmt):
    make_pose_scene(tmp_path, n_pairs=2, fmt=fmt)
    pairs = pose_pairs(tmp_path)
    assert len(pairs) == 2 and pairs[0].subset == "scene"
    assert np.allclose(pairs[1].T_0to1, scene_pose(8.0), atol=1e-9)
    assert np.allclose(pairs[0].K0, SCENE_K) and pairs[0].image0.is_file()
    file = tmp_path / ("pairs." + fmt)
    assert [p.key for p in pose_pairs(file)] == [p.key for p in pairs]  # the file itself as root


def test_pose_pairs_superglue_format_and_errors(tmp_path):
    make_pose_scene(tmp_path, n_pairs=1)
    line = (tmp_path / "pairs.txt").read_text().splitlines()[1].split()
    (tmp_path / "pairs.txt").write_text(" ".join(line[:2] + ["0", "0"] + line[2:]) + "\n")
    assert len(pose_pairs(tmp_path)) == 1
    (tmp_path / "pairs.txt").write_text(" ".join(line[:2] + ["1", "0"] + line[2:]) + "\n")
    with pytest.raises(DataError, match="pairs.txt:1: EXIF rotations"):
        pose_pairs(tmp_path)
    (tmp_path / "pairs.txt").write_text(" ".join(line[:-1]) + "\n")
    with pytest.raises(DataError, match="pairs.txt:1: expected 36 fields"):
        pose_pairs(tmp_path)
    (tmp_path / "pairs.txt").write_text(" ".join(line).replace("scene/0_b.png", "scene/missing.png") + "\n")
    with pytest.raises(DataError, match=r"image not found: .*scene/missing.png.*relative to .*images"):
        pose_pairs(tmp_path)
    (tmp_path / "pairs.txt").unlink()
    with pytest.raises(DataError, match="no pairs.json or pairs.txt in .*expected pose layout"):
        pose_pairs(tmp_path)
    (tmp_path / "pairs.json").write_text('[{"image0": "a.png"}]')
    with pytest.raises(DataError, match=r"pairs.json\[0\]: missing image1, K0, K1, T_0to1"):
        pose_pairs(tmp_path)


def test_render_matches_projection():
    """The rendered views agree with the projected correspondences (checks the helper)."""
    import cv2

    texture = textured(300, 380, seed=7)
    T = scene_pose(6.0)
    a = render_view(np.eye(3), np.zeros(3), texture).astype(np.float32)
    b = render_view(T[:3, :3], T[:3, 3], texture).astype(np.float32)
    p0, p1 = project_scene_points(T, 300)
    assert p0.min() > 0 and p1.min() > 0 and p0[:, 0].max() < 199 and p1[:, 1].max() < 149

    def sample(img, p):
        return cv2.remap(img, p[:, :1].astype(np.float32), p[:, 1:].astype(np.float32), cv2.INTER_LINEAR)[:, 0]

    same = np.abs(sample(a, p0) - sample(b, p1)).mean()
    shuffled = np.abs(sample(a, p0) - sample(b, p1[::-1])).mean()
    assert same < 0.15 * shuffled
