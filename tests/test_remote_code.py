"""A saved folder loads with trust_remote_code=True in a fresh process where comface_hf cannot be imported."""

import subprocess
import sys
import textwrap

import torch

from comface_hf import ComFaceImageProcessor, ComFaceModel


def test_trust_remote_code_without_comface_hf(tmp_path, tiny_config):
    model = ComFaceModel(tiny_config).eval()
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    ComFaceImageProcessor(crop_size=32).save_pretrained(folder)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.save({"x": x, "expected": model.compare(x[:1], x[1:]).detach()}, tmp_path / "probe.pt")

    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["comface_hf"] = None  # any `import comface_hf` now raises ImportError
        sys.path = [p for p in sys.path if p not in ("", {str(tmp_path)!r})]
        try:
            import comface_hf
        except ImportError:
            pass
        else:
            raise SystemExit("comface_hf was importable")
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
    )
    env = {"HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "REMOTE_OK" in result.stdout
