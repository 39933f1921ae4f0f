"""The face-change-estimation pipeline from a saved folder, in a fresh process where comface_hf cannot be imported."""

import json

import torch
from PIL import Image

from comface_hf import ComFaceConfig, ComFaceImageProcessor, ComFaceModel
from comface_hf.face_comparison import FaceComparer
from comface_hf.monitoring.calibration import render_identity_pairs
from comface_hf.pipeline_comface import save_with_pipeline

from tests.remote_code import run_without_comface_hf


def test_pipeline_with_trust_remote_code_without_comface_hf(tmp_path):
    torch.manual_seed(0)
    config = ComFaceConfig(backbone="resnet18", image_size=32, projection_hidden_size=32, projection_dim=8,
                           same_person_threshold=0.5, same_person_far=0.01, same_person_frr=0.06)
    model = ComFaceModel(config).eval()
    folder = tmp_path / "model"
    save_with_pipeline(model, str(folder), ComFaceImageProcessor(crop_size=32))
    images, _ = render_identity_pairs(3, 96, seed=1)  # the faces test_monitoring uses (the detector finds them all)
    paths = []
    for i in range(2):
        for j in range(2):
            paths.append(str(tmp_path / f"face{i}{j}.png"))
            Image.fromarray(images[i, j]).save(paths[-1])
    pairs = [(paths[0], paths[1]), (paths[0], paths[2]), (paths[3], paths[1])]
    expected = [r.to_dict() for r in FaceComparer(model, ComFaceImageProcessor(crop_size=32)).compare_pairs(pairs)]
    (tmp_path / "expected.json").write_text(json.dumps({"pairs": pairs, "expected": expected}))

    body = f"""
        import json
        from transformers import pipeline
        data = json.load(open({str(tmp_path / "expected.json")!r}))
        pairs = [tuple(p) for p in data["pairs"]]
        pipe = pipeline(model={str(folder)!r}, trust_remote_code=True)  # the task comes from config.json
        assert type(pipe).__module__.startswith("transformers_modules"), type(pipe).__module__
        assert type(pipe).__name__ == "FaceChangeEstimationPipeline"
        one = pipe(*pairs[0])
        batched = pipe(pairs, batch_size=32)
        named = pipeline("face-change-estimation", model={str(folder)!r}, trust_remote_code=True)(
            {{"before": pairs[1][0], "after": pairs[1][1]}})
        assert isinstance(batched, list) and len(batched) == 3
        expected = data["expected"]
        for got, want in zip([one] + batched[1:] + [named], expected[:1] + expected[1:] + [expected[1]]):
            for key in ("change", "distance", "similarity"):
                assert abs(got[key] - want[key]) < 1e-4, (key, got[key], want[key])
            assert got["same_person"] == want["same_person"] and got["units"] == "alpha units"
            assert got["threshold"] == 0.5 and got["false_accept_rate"] == 0.01
        try:
            pipe("not_there.png", pairs[0][1])
        except FileNotFoundError as exc:
            assert "not_there.png" in str(exc)
        else:
            raise SystemExit("a missing file was accepted")
        print("PIPELINE_OK")
        """
    run_without_comface_hf(tmp_path, body, "PIPELINE_OK")
