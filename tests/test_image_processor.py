"""ComFaceImageProcessor: PIL, numpy and tensors, grayscale and RGBA, saved as preprocessor_config.json."""

import numpy as np
import pytest
import torch
from PIL import Image

from comface_hf import ComFaceConfig, ComFaceImageProcessor


def test_all_input_kinds_give_the_model_input(tmp_path):
    processor = ComFaceImageProcessor(crop_size=32, align="none")  # noise images: no face to align
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (60, 48, 3), dtype=np.uint8)
    inputs = [
        Image.fromarray(rgb),
        Image.fromarray(rgb[..., 0], mode="L"),
        Image.fromarray(np.concatenate([rgb, np.full((60, 48, 1), 255, np.uint8)], -1), mode="RGBA"),
        rgb,
        rgb[..., 0],
        torch.from_numpy(rgb).permute(2, 0, 1),
        np.concatenate([rgb, np.zeros((60, 48, 1), np.uint8)], -1),
    ]
    out = processor(inputs, return_tensors="pt")["pixel_values"]
    assert out.shape == (len(inputs), 3, 32, 32)
    assert -1.0 <= out.min() and out.max() <= 1.0
    # RGB from PIL, numpy and tensor agree; RGBA drops alpha.
    torch.testing.assert_close(out[0], out[3])
    torch.testing.assert_close(out[0], out[5])
    torch.testing.assert_close(out[0], out[2])
    torch.testing.assert_close(out[0], out[6])
    # Grayscale repeats one channel.
    torch.testing.assert_close(out[1][0], out[1][2])

    processor.save_pretrained(tmp_path)
    assert (tmp_path / "preprocessor_config.json").exists()
    from transformers import AutoImageProcessor

    loaded = AutoImageProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded, ComFaceImageProcessor)
    torch.testing.assert_close(loaded(inputs, return_tensors="pt")["pixel_values"], out)


def test_model_input_size_follows_config():
    from comface_hf import ComFaceModel

    config = ComFaceConfig(backbone="resnet18", image_size=40, projection_hidden_size=16, projection_dim=8)
    processor = ComFaceImageProcessor(crop_size=config.image_size, align="none")
    pixels = processor(Image.new("RGB", (100, 80)), return_tensors="pt")["pixel_values"]
    ComFaceModel(config).eval().get_image_features(pixels)


def test_unreadable_inputs_are_named():
    processor = ComFaceImageProcessor(crop_size=32, align="none")
    with pytest.raises((ValueError, TypeError), match="shape|image"):
        processor(np.zeros((4, 5, 6, 7), np.uint8), return_tensors="pt")
    with pytest.raises(FileNotFoundError, match="not an image at all"):
        processor("not an image at all", return_tensors="pt")


def test_float_tensors_keep_their_values_with_do_rescale_false():
    # torch.Tensor has a .mode() method: a float tensor was once taken for a PIL image and re-read as 8-bit RGB,
    # so floats in [0, 1] came out 255 times too large.
    import torch

    from comface_hf import ComFaceImageProcessor

    processor = ComFaceImageProcessor(crop_size=16, align="none", do_normalize=False)
    image = torch.rand(3, 16, 16)
    from_tensor = processor([image], do_rescale=False, return_tensors="pt")["pixel_values"][0]
    from_array = processor([image.permute(1, 2, 0).numpy()], do_rescale=False, return_tensors="pt")["pixel_values"][0]
    assert from_tensor.dtype == torch.float32 and float(from_tensor.max()) <= 1.0
    assert torch.allclose(from_tensor, from_array) and torch.allclose(from_tensor, image, atol=1e-6)
