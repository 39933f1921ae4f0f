"""A saved folder loads with trust_remote_code=True in a fresh process where comface_hf cannot be imported."""

import torch

from comface_hf import ComFaceImageProcessor, ComFaceModel

from tests.remote_code import run_without_comface_hf


def test_trust_remote_code_without_comface_hf(tmp_path, tiny_config):
    model = ComFaceModel(tiny_config).eval()
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    ComFaceImageProcessor(crop_size=32).save_pretrained(folder)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.save({"x": x, "expected": model.compare(x[:1], x[1:]).detach()}, tmp_path / "probe.pt")

    body = f"""
        import torch
        from transformers import AutoImageProcessor, AutoModel
        model = AutoModel.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
        processor = AutoImageProcessor.from_pretrained({str(folder)!r}, trust_remote_code=True)
        probe = torch.load({str(tmp_path / "probe.pt")!r})
        got = model.compare(probe["x"][:1], probe["x"][1:])
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        assert type(processor).__name__ == "ComFaceImageProcessor"
        torch.testing.assert_close(got, probe["expected"], rtol=0, atol=0)
        print("REMOTE_OK")
        """
    run_without_comface_hf(tmp_path, body, "REMOTE_OK", timeout=240)
