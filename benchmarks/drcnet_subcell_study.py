"""Sub-cell refinements of ``drcnet.xfeat`` compared on one network pass per pair.

    OMP_NUM_THREADS=1 python benchmarks/drcnet_subcell_study.py --data ../shared/data/homography --out h.json
    OMP_NUM_THREADS=1 python benchmarks/drcnet_subcell_study.py --benchmark pose --data ../shared/data/pose --out p.json

Research script (not an API): the network and the reference's cell matching run once per
pair (memoised), then B's matched fine cell is moved by each refinement in turn, all on the
fine correlation ``c`` (query descriptor . B's fine descriptors) around the matched cell:

* ``none``: the reference's extraction (cell centres);
* ``parab``: featmatch's default, a parabola per axis through c[-1], c[0], c[+1];
* ``quad2d``: least-squares 2-D quadratic (with the cross term) on the 3x3 window,
  Newton step where the Hessian is negative definite;
* ``gauss``: per-axis 3-point Gaussian (the parabola through log c; ``parab`` where a value
  is not positive);
* ``soft3``: expectation of softmax(c / 0.02) over the 3x3 window.

Offsets are clamped to half a cell. Scoring is ``featmatch eval homography``'s or ``featmatch
eval pose``'s (their ``score_pair`` / ``summarize``; pose: OpenCV USAC_MAGSAC, 0.5 px). Prints
per pair the corner error (pose: error in degrees) of each variant and at the end MHA@1/3/5,
AUC@3/10 and MMA@1/3 (pose: AUC@5/10/20 and Sampson precision) per variant; ``--out`` keeps
every pair's row.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import featmatch
from featmatch.eval import homography as eval_h
from featmatch.eval import pose as eval_p
from featmatch.eval.data import homography_pairs, pose_pairs
from featmatch.eval.predict import _FeatureMemo, _predict_one
from featmatch.models.drcnet import model as M

PARABOLA = M.subcell_offsets


def _window(desc: torch.Tensor, fine_t: torch.Tensor, pos: torch.Tensor):
    """Correlation on the 3x3 window around each match: ``(B, N, 3[y], 3[x])`` and a mask
    of windows inside the map."""
    b, c, h, w = fine_t.shape
    flat = fine_t.reshape(b, c, h * w)
    x, y = pos[..., 0].long(), pos[..., 1].long()

    def at(xx, yy):
        idx = (yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1)).unsqueeze(1).expand(-1, c, -1)
        return (torch.gather(flat, 2, idx) * desc).sum(1)

    v = torch.stack([torch.stack([at(x + i, y + j) for i in (-1, 0, 1)], -1) for j in (-1, 0, 1)], -2)
    return v, (x > 0) & (x < w - 1) & (y > 0) & (y < h - 1)


def none(desc, fine_t, pos):
    return torch.zeros(*pos.shape[:-1], 2, dtype=fine_t.dtype)


def quad2d(desc, fine_t, pos):
    v, inside = _window(desc, fine_t, pos)
    ys, xs = torch.meshgrid(torch.tensor([-1.0, 0, 1]), torch.tensor([-1.0, 0, 1]), indexing="ij")
    xs, ys = xs.reshape(-1), ys.reshape(-1)
    design = torch.stack([torch.ones(9), xs, ys, xs * xs, ys * ys, xs * ys], -1)
    _, bx, by, cxx, cyy, cxy = (v.reshape(*v.shape[:-2], 9) @ torch.linalg.pinv(design).T).unbind(-1)
    hxx, hyy = 2 * cxx, 2 * cyy
    det = hxx * hyy - cxy * cxy
    ok = inside & (hxx < 0) & (det > 0)
    det = torch.where(ok, det, torch.ones_like(det))
    off = torch.stack([-(hyy * bx - cxy * by) / det, -(hxx * by - cxy * bx) / det], -1)
    return torch.where(ok[..., None], off, torch.zeros_like(off)).clamp(-0.5, 0.5)


def gauss(desc, fine_t, pos):
    v, inside = _window(desc, fine_t, pos)
    lv = torch.log(v.clamp_min(1e-6))
    ok = (v[..., 1, :] > 0).all(-1) & (v[..., :, 1] > 0).all(-1)
    g = torch.stack([M.parabola_offsets(lv[..., 1, 0], lv[..., 1, 1], lv[..., 1, 2], inside & ok),
                     M.parabola_offsets(lv[..., 0, 1], lv[..., 1, 1], lv[..., 2, 1], inside & ok)], -1)
    return torch.where(ok[..., None], g, PARABOLA(desc, fine_t, pos))


def soft3(desc, fine_t, pos, temperature: float = 0.02):
    v, inside = _window(desc, fine_t, pos)
    p = torch.softmax(v.reshape(*v.shape[:-2], 9) / temperature, -1).reshape(v.shape)
    r = torch.tensor([-1.0, 0, 1])
    off = torch.stack([(p.sum(-2) * r).sum(-1), (p.sum(-1) * r).sum(-1)], -1)
    return torch.where(inside[..., None], off, torch.zeros_like(off))


VARIANTS = {"none": none, "parab": PARABOLA, "quad2d": quad2d, "gauss": gauss, "soft3": soft3}


def memoise(model) -> None:
    """The network and the cell matching run once per pair; only the refinement changes."""
    forward, find = type(model).forward, M.find_matches
    fwd_memo: dict = {}
    find_memo: dict = {}

    def fwd(self, a, b):
        key = (tuple(a.shape), tuple(b.shape), float(a.sum()), float(b.sum()))
        if key not in fwd_memo:
            fwd_memo.clear()
            fwd_memo[key] = forward(self, a, b)
        return fwd_memo[key]

    def find_matches(corr, fine_q, fine_t, points, source_to_target, chunk, subcell=False):
        w = torch.arange(points.shape[1], dtype=points.dtype)[None, :, None]
        key = (tuple(points.shape), float(points.sum()), float((points * w).sum()), source_to_target,
               tuple(fine_t.shape), float(fine_t.sum()))
        if key not in find_memo:
            if len(find_memo) > 4:
                find_memo.clear()
            find_memo[key] = find(corr, fine_q, fine_t, points, source_to_target, chunk, False)[:2]
        m, s = find_memo[key]
        if not subcell:
            return m, s, None
        offs = [M.subcell_offsets(M.query_descriptors(fine_q, points[:, k:k + chunk]), fine_t,
                                  m[:, k:k + chunk] / M.FINE_STRIDE) for k in range(0, points.shape[1], chunk)]
        return m, s, (torch.cat(offs, 1) if offs else m.new_zeros(1, 0, 2))

    type(model).forward = fwd
    M.find_matches = find_matches


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--benchmark", choices=("homography", "pose"), default="homography")
    ap.add_argument("--data", required=True, help="data root (the `featmatch eval` layout of --benchmark)")
    ap.add_argument("--out", default=None, help="JSON file for every pair's rows")
    args = ap.parse_args()
    model = featmatch.load("drcnet.xfeat", subcell=True)
    memoise(model)
    hom = args.benchmark == "homography"
    score_pair = eval_h.score_pair if hom else eval_p.score_pair
    rows: dict = {k: [] for k in VARIANTS}
    for i, pair in enumerate(homography_pairs(args.data) if hom else pose_pairs(args.data)):
        t = time.time()
        for name, fn in VARIANTS.items():
            M.subcell_offsets = fn
            arrays, attrs = _predict_one(model, pair, _FeatureMemo())
            rows[name].append(score_pair({**arrays, **attrs}, pair))
        errs = {k: round(r[-1]["corner_error" if hom else "error_deg"], 2) for k, r in rows.items()}
        print(i, pair.key, f"{time.time() - t:.0f}s", errs, flush=True)
        if args.out:
            with open(args.out, "w") as f:
                json.dump(rows, f)
    if not hom:
        print("| variant | AUC@5 / @10 / @20 | P (Sampson 1px) |\n|---|---|---|")
        for name, r in rows.items():
            s = eval_p.summarize(r)
            print(f"| {name} | {100 * s['auc']['5']:.1f} / {100 * s['auc']['10']:.1f} / {100 * s['auc']['20']:.1f} | "
                  f"{100 * s['precision_sampson']:.1f} |")
        return
    print("| variant | MHA@1 / @3 / @5 | AUC@3 / @10 | MMA@1 / @3 |\n|---|---|---|---|")
    for name, r in rows.items():
        s = eval_h.summarize(r)
        print(f"| {name} | {100 * s['mha']['1']:.1f} / {100 * s['mha']['3']:.1f} / {100 * s['mha']['5']:.1f} | "
              f"{100 * s['auc']['3']:.1f} / {100 * s['auc']['10']:.1f} | {100 * s['mma']['1']:.1f} / {100 * s['mma']['3']:.1f} |")


if __name__ == "__main__":
    main()
