"""Face detector accuracy and speed on FG-NET dev photos against their manual landmarks (issue 11).

    .venv/bin/python -m benchmarks.bench_detector --data_dir ../shared/realfaces/fgnet_dev
    # the alternative that was measured against it (needs mediapipe==0.10.14 in a separate venv, see BENCHMARKS.md):
    /tmp/mpvenv/bin/python -m benchmarks.bench_detector --backend mediapipe

Reports, per backend: faces found (%), the normalised mean error (NME) of 10 landmarks that both FG-NET's own
68-point markup and the detector's layout define (4 eye corners, 2 mouth corners, upper and lower lip centre, nose
tip, chin), normalised by the outer-eye-corner distance (the 300-W convention), the same error for the three points
the face frame is built from (eye centres vs FG-NET's pupils, mouth centre), and images/s on this machine
(decoding included, one process). FG-NET's images are research data: read from ../shared, never copied.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

try:
    import transformers  # noqa: F401
except ImportError:
    # The separate venv that holds mediapipe 0.10.14 has no transformers: load comface_hf's alignment modules
    # (numpy + PIL only) without running the package's __init__.
    import types

    _pkg = types.ModuleType("comface_hf")
    _pkg.__path__ = [str(Path(__file__).resolve().parents[1] / "comface_hf")]
    sys.modules["comface_hf"] = _pkg

from comface_hf.alignment import read_pts
from comface_hf.face_alignment import key_points

#: FG-NET markup index -> the same point in iBUG's 68 (dlib) and MediaPipe's face mesh.
FGNET_POINTS = [27, 29, 34, 32, 48, 54, 51, 57, 67, 7]
IBUG_POINTS = [36, 39, 42, 45, 48, 54, 51, 57, 30, 8]
MEDIAPIPE_POINTS = [33, 133, 362, 263, 61, 291, 0, 17, 1, 152]
FGNET_OUTER_EYE_CORNERS = (27, 32)


def dlib_backend():
    from comface_hf.face_alignment import get_detector

    detector = get_detector("dlib")

    def detect(rgb: np.ndarray):
        faces = detector.detect(rgb)
        if not faces:
            return None
        pts = faces[0].landmarks
        return pts[IBUG_POINTS], key_points(pts, "ibug68"), len(faces)

    return detect


def mediapipe_backend():
    import mediapipe as mp  # 0.10.14: the last release whose wheel carries the face mesh weights

    mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=3, refine_landmarks=True)

    def detect(rgb: np.ndarray):
        result = mesh.process(rgb)
        if not result.multi_face_landmarks:
            return None
        h, w = rgb.shape[:2]
        faces = [np.array([[p.x * w, p.y * h] for p in f.landmark]) for f in result.multi_face_landmarks]
        pts = max(faces, key=lambda p: np.ptp(p[:, 0]) * np.ptp(p[:, 1]))
        three = np.stack([pts[468], pts[473], (pts[61] + pts[291]) / 2])  # iris centres, mouth centre
        return pts[MEDIAPIPE_POINTS], three, len(faces)

    return detect


BACKENDS = {"dlib": dlib_backend, "mediapipe": mediapipe_backend}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default="../shared/realfaces/fgnet_dev")
    parser.add_argument("--backend", default="dlib", choices=sorted(BACKENDS))
    args = parser.parse_args()
    root = Path(args.data_dir)
    images = sorted((root / "images").iterdir())
    detect = BACKENDS[args.backend]()
    detect(np.asarray(Image.open(images[0]).convert("RGB")))  # load the models outside the timing

    found, nme, frame_err, several, seconds = 0, [], [], 0, 0.0
    for path in images:
        start = time.perf_counter()
        rgb = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
        result = detect(rgb)
        seconds += time.perf_counter() - start
        if result is None:
            continue
        points, three, count = result
        found += 1
        several += count > 1
        truth = read_pts(root / "points" / f"{path.stem.lower()}.pts")
        norm = np.hypot(*(truth[FGNET_OUTER_EYE_CORNERS[0]] - truth[FGNET_OUTER_EYE_CORNERS[1]]))
        nme.append(np.linalg.norm(points - truth[FGNET_POINTS], axis=1).mean() / norm)
        frame_err.append(np.linalg.norm(three - key_points(truth, "fgnet68"), axis=1).mean() / norm)
    nme, frame_err = np.array(nme), np.array(frame_err)
    print(
        f"| {args.backend} | {len(images)} | {found / len(images):.1%} | {several} | {nme.mean():.4f} "
        f"({np.median(nme):.4f}) | {(nme > 0.1).mean():.1%} | {frame_err.mean():.4f} | {len(images) / seconds:.1f} |"
    )
    print(f"load average {' '.join(open('/proc/loadavg').read().split()[:3])}, {os.cpu_count()} cores", file=sys.stderr)


if __name__ == "__main__":
    main()
