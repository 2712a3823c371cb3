"""A small synthetic 3-D scene with known cameras: a textured box on a textured ground.

Used by the pipeline tests and docs to make structure-from-motion inputs without any
data set: every image is rendered exactly (planar faces warped by their homographies,
ground first, then the box's faces that look at the camera), so the cameras are ground
truth for the reconstruction.

Conventions: world z is up; cameras are OpenCV-style (x right, y down, z forward) with
``x_cam = R @ X + t``; pixel centres at integer coordinates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np


@dataclass(frozen=True)
class SceneCamera:
    """One rendered view. Shape: K ``(3, 3)``, R ``(3, 3)``, t ``(3,)``; size ``(W, H)``."""

    name: str
    K: np.ndarray
    R: np.ndarray
    t: np.ndarray
    size: tuple[int, int]

    @property
    def center(self) -> np.ndarray:
        return -self.R.T @ self.t


def _texture(rng: np.random.Generator, size: int = 512) -> np.ndarray:
    """Multi-scale random texture (uint8 RGB ``(size, size, 3)``) rich in corners and blobs."""
    import cv2

    img = np.zeros((size, size, 3), np.float32)
    for cells, weight in ((6, 0.35), (24, 0.35), (96, 0.3)):
        small = rng.uniform(0, 1, (cells, cells, 3)).astype(np.float32)
        img += weight * cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
    img = np.clip(img, 0, 1)
    out = (img * 255).astype(np.uint8)
    for _ in range(60):
        c = tuple(int(v) for v in rng.integers(0, size, 2))
        r = int(rng.integers(4, 24))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        if rng.uniform() < 0.5:
            cv2.circle(out, c, r, colour, -1)
        else:
            cv2.rectangle(out, c, (c[0] + r, c[1] + int(rng.integers(4, 24))), colour, -1)
    return out


def look_at(center: np.ndarray, target: np.ndarray, up: np.ndarray = np.array([0.0, 0.0, 1.0])) -> tuple[np.ndarray, np.ndarray]:
    """Rotation and translation of a camera at ``center`` looking at ``target`` (z up)."""
    z = target - center
    z = z / np.linalg.norm(z)
    x = np.cross(z, up)
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])
    return R, -R @ center


def _quads(box: tuple[float, float, float], ground: float, tiles: int) -> list[tuple[np.ndarray, Optional[np.ndarray], int]]:
    """Planar quads (4 corners, outward normal or None, texture id) of the scene."""
    bx, by, bz = box
    quads: list = []
    step = 2 * ground / tiles
    for i in range(tiles):  # ground, tiled so every tile is in front of every camera
        for j in range(tiles):
            x0, y0 = -ground + i * step, -ground + j * step
            quads.append((np.array([[x0, y0, 0], [x0 + step, y0, 0], [x0 + step, y0 + step, 0], [x0, y0 + step, 0]], float),
                          None, 0, (i, j)))
    x, y = bx / 2, by / 2
    faces = [  # corners (counter-clockwise seen from outside), outward normal
        ([[-x, -y, bz], [x, -y, bz], [x, y, bz], [-x, y, bz]], [0, 0, 1]),
        ([[-x, -y, 0], [x, -y, 0], [x, -y, bz], [-x, -y, bz]], [0, -1, 0]),
        ([[x, -y, 0], [x, y, 0], [x, y, bz], [x, -y, bz]], [1, 0, 0]),
        ([[x, y, 0], [-x, y, 0], [-x, y, bz], [x, y, bz]], [0, 1, 0]),
        ([[-x, y, 0], [-x, -y, 0], [-x, -y, bz], [-x, y, bz]], [-1, 0, 0]),
    ]
    for k, (c, n) in enumerate(faces):
        quads.append((np.array(c, float), np.array(n, float), k + 1, None))
    return quads


def render_view(cam: SceneCamera, textures: list[np.ndarray], *, box=(1.0, 1.0, 0.8), ground: float = 2.0,
                tiles: int = 6, background: int = 90) -> np.ndarray:
    """Render one view (uint8 RGB ``(H, W, 3)``) of the box-on-ground scene."""
    import cv2

    w, h = cam.size
    img = np.full((h, w, 3), background, np.uint8)
    for corners, normal, tex_id, tile in _quads(box, ground, tiles):
        if normal is not None and float(normal @ (cam.center - corners.mean(0))) <= 0:
            continue  # back face
        xc = corners @ cam.R.T + cam.t
        if np.any(xc[:, 2] < 0.05):
            continue
        uv = (xc @ cam.K.T)[:, :2] / xc[:, 2:3]
        tex = textures[tex_id]
        ts = tex.shape[0]
        if tile is not None:  # the tile's part of the ground texture
            n = ts // tiles
            tex = tex[tile[1] * n:(tile[1] + 1) * n, tile[0] * n:(tile[0] + 1) * n]
        th, tw = tex.shape[:2]
        src = np.array([[0, th - 1], [tw - 1, th - 1], [tw - 1, 0], [0, 0]], np.float32)
        if tile is not None:
            src = np.array([[0, 0], [tw - 1, 0], [tw - 1, th - 1], [0, th - 1]], np.float32)
        H = cv2.getPerspectiveTransform(src, uv.astype(np.float32))
        warped = cv2.warpPerspective(tex, H, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        mask = cv2.warpPerspective(np.full((th, tw), 255, np.uint8), H, (w, h), flags=cv2.INTER_LINEAR)
        img[mask > 127] = warped[mask > 127]
    return img


def orbit_cameras(n: int, *, size: tuple[int, int] = (320, 240), focal: float = 300.0, radius: float = 3.2,
                  height: float = 2.2, start_deg: float = 0.0, step_deg: float = 18.0,
                  names: Optional[list[str]] = None) -> list[SceneCamera]:
    """``n`` cameras on a circle around the box, ``step_deg`` apart, all looking at it."""
    w, h = size
    K = np.array([[focal, 0, (w - 1) / 2], [0, focal, (h - 1) / 2], [0, 0, 1]], float)
    cams = []
    for i in range(n):
        a = math.radians(start_deg + i * step_deg)
        c = np.array([radius * math.cos(a), radius * math.sin(a), height])
        R, t = look_at(c, np.array([0.0, 0.0, 0.3]))
        name = names[i] if names else f"view_{i:02d}.png"
        cams.append(SceneCamera(name, K.copy(), R, t, (w, h)))
    return cams


def render_scene(folder: Union[str, Path], cameras: list[SceneCamera], *, seed: int = 0) -> list[Path]:
    """Render every camera into ``folder`` (PNG or JPEG by the name's extension); returns the paths.

    The textures depend only on ``seed``, so views rendered by separate calls with the same
    seed show the same scene.
    """
    import cv2

    rng = np.random.default_rng(seed)
    textures = [_texture(rng) for _ in range(6)]
    folder = Path(folder)
    paths = []
    for cam in cameras:
        p = folder / cam.name
        p.parent.mkdir(parents=True, exist_ok=True)
        img = render_view(cam, textures)
        if not cv2.imwrite(str(p), cv2.cvtColor(img, cv2.COLOR_RGB2BGR)):
            raise OSError(f"cannot write {p}")
        paths.append(p)
    return paths
