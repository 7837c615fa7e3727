"""`python -m ser.tools.export`: ONNX and TorchScript give PyTorch's logits and carry the metadata."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ser.tools.export import main, read_torchscript_metadata
from ser.tools.inference import load_checkpoint


def feature_batch(loaded, batch: int) -> torch.Tensor:
    # A batch size other than the traced one (2) shows that the batch axis is dynamic.
    generator = torch.Generator().manual_seed(1)
    return 10 * torch.randn(batch, *loaded.input_shape, generator=generator)


def test_onnx_runtime_output_equals_pytorch(trained_checkpoint: Path, tmp_path: Path) -> None:
    import onnx
    import onnxruntime

    out = main([f"checkpoint={trained_checkpoint}", "format=onnx", f"out={tmp_path / 'model.onnx'}"])
    loaded = load_checkpoint(trained_checkpoint)
    for batch in (1, 5):
        x = feature_batch(loaded, batch)
        session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        (logits,) = session.run(None, {"features": x.numpy()})
        with torch.no_grad():
            expected = loaded.net(x).numpy()
        assert logits.shape == (batch, len(loaded.class_names))
        np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)

    model = onnx.load(str(out))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    metadata = {p.key: p.value for p in model.metadata_props}
    assert json.loads(metadata["class_names"]) == loaded.class_names
    assert json.loads(metadata["feature_settings"]) == loaded.feature_settings.to_dict()
    assert json.loads(metadata["net"])["name"] == "mssenet"  # a registry name, no class path
    assert metadata["corpus"] == "synthetic"


def test_torchscript_output_equals_pytorch(trained_checkpoint: Path, tmp_path: Path) -> None:
    out = main([f"checkpoint={trained_checkpoint}", "format=torchscript", f"out={tmp_path / 'model.pt'}"])
    loaded = load_checkpoint(trained_checkpoint)
    scripted = torch.jit.load(str(out))
    for batch in (1, 5):
        x = feature_batch(loaded, batch)
        with torch.no_grad():
            torch.testing.assert_close(scripted(x), loaded.net(x), atol=1e-5, rtol=0)
    metadata = read_torchscript_metadata(out)
    assert json.loads(metadata["class_names"]) == loaded.class_names
    assert json.loads(metadata["feature_settings"])["signal_length"] == 11025


def test_an_unknown_format_is_refused(trained_checkpoint: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([f"checkpoint={trained_checkpoint}", "format=tflite", f"out={tmp_path / 'm'}"])
    assert exit_info.value.code == 2
    assert "format='tflite'" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()
