"""Export a trained checkpoint's network to ONNX or TorchScript, metadata included.

    python -m ser.tools.export checkpoint=CKPT format=onnx|torchscript out=FILE [frames=N]

The graph maps float32 features (batch, frames, num_features), batch axis dynamic, to
logits (batch, num_classes); features are computed outside it, by the recipe stored with
it (JSON strings): ONNX `metadata_props` keys `class_names`, `feature_settings`, `net`,
`corpus`, `ser_metadata` (all of it), `input`/`output`; TorchScript the `extra_files`
entry `ser_metadata.json` (`torch.jit.load(path, _extra_files={"ser_metadata.json": ""})`).
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import MISSING

from ser import __version__
from ser.cli import parse_key_values, run_cli
from ser.errors import ConfigError
from ser.tools.inference import LoadedCheckpoint, check_output_path, load_checkpoint

FORMATS = ("onnx", "torchscript")
ONNX_OPSET = 17
TORCHSCRIPT_METADATA_FILE = "ser_metadata.json"
INPUT_NAME = "features"
OUTPUT_NAME = "logits"

USAGE = (
    "usage: ser-export (or python -m ser.tools.export) checkpoint=CKPT format=onnx|torchscript "
    "out=FILE [frames=N]"
)


@dataclass
class ExportArguments:
    checkpoint: str = field(default=MISSING, metadata={"help": "a checkpoint of ser-train"})
    format: str = field(default=MISSING, metadata={"help": "onnx (extra: ser[onnx]) or torchscript"})
    out: str = field(default=MISSING, metadata={"help": "the file to write"})
    frames: int | None = field(
        default=None, metadata={"help": "frames of the example input (null: the checkpoint's)"}
    )


def export_metadata(loaded: LoadedCheckpoint) -> dict[str, str]:
    """String metadata describing how to feed the exported graph and read its output."""
    frames, features = loaded.input_shape
    return {
        "class_names": json.dumps(loaded.class_names),
        "feature_settings": json.dumps(loaded.feature_settings.to_dict(), sort_keys=True),
        "net": json.dumps(loaded.metadata.get("net", {}), sort_keys=True),
        "corpus": str(loaded.metadata.get("corpus", "")),
        "ser_metadata": json.dumps(loaded.metadata, sort_keys=True, default=str),
        "input": f"{INPUT_NAME}: float32 (batch, {frames}, {features}) features of ser.data.features",
        "output": f"{OUTPUT_NAME}: float32 (batch, {len(loaded.class_names)}) logits, softmax for probabilities",
        "ser_version": __version__,
    }


def example_input(loaded: LoadedCheckpoint, frames: int | None = None, batch: int = 2) -> torch.Tensor:
    """A random feature batch of the shape the network was trained on (for tracing)."""
    default_frames, features = loaded.input_shape
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch, frames or default_frames, features, generator=generator)


def export_onnx(loaded: LoadedCheckpoint, out: Path, frames: int | None = None) -> Path:
    """Write an ONNX model (opset 17, dynamic batch axis) with metadata_props."""
    try:
        import onnx
    except ImportError:
        raise ConfigError(
            "format=onnx needs the onnx package: pip install 'ser[onnx]' (or format=torchscript)"
        ) from None

    net = loaded.net.cpu().eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # The TorchScript-based exporter is deprecated in favour of dynamo, which needs
        # onnxscript (not a dependency); it still exports these convolutional nets exactly.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (example_input(loaded, frames),),
            str(out),
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )
    model = onnx.load(str(out))
    for key, value in export_metadata(loaded).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.doc_string = "ser speech emotion recognition network: features -> logits"
    onnx.checker.check_model(model)
    onnx.save(model, str(out))
    return out


def export_torchscript(loaded: LoadedCheckpoint, out: Path, frames: int | None = None) -> Path:
    """Write a traced TorchScript module with the metadata as an extra file."""
    net = loaded.net.cpu().eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        # The shape check in MSSENet._check_input becomes a constant under tracing; it can
        # only ever pass for the traced feature dimension, which is what we want.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(net, (example_input(loaded, frames),))
    extra = {TORCHSCRIPT_METADATA_FILE: json.dumps(export_metadata(loaded), sort_keys=True)}
    torch.jit.save(traced, str(out), _extra_files=extra)
    return out


def export(loaded: LoadedCheckpoint, kind: str, out: str | Path, frames: int | None = None) -> Path:
    """Export ``loaded``'s network as ``kind`` ("onnx" or "torchscript") to ``out``."""
    if kind not in FORMATS:
        raise ConfigError(f"format={kind!r}: expected one of {', '.join(FORMATS)}")
    if frames is not None and frames < 1:
        raise ConfigError(f"frames must be positive, got {frames}")
    out = Path(out)
    if kind == "onnx":
        return export_onnx(loaded, out, frames)
    return export_torchscript(loaded, out, frames)


def read_torchscript_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata dict stored in a TorchScript export (values are JSON strings)."""
    files = {TORCHSCRIPT_METADATA_FILE: ""}
    torch.jit.load(str(path), map_location="cpu", _extra_files=files)
    return json.loads(files[TORCHSCRIPT_METADATA_FILE])


def run(args: ExportArguments) -> Path:
    if args.format not in FORMATS:  # before loading anything
        raise ConfigError(f"format={args.format!r}: expected one of {', '.join(FORMATS)}")
    suffix = ".onnx" if args.format == "onnx" else ".pt"
    check_output_path("out", args.out, {"the checkpoint being exported": [Path(args.checkpoint)]}, f"model{suffix}")
    loaded = load_checkpoint(args.checkpoint)
    path = export(loaded, str(args.format), args.out, args.frames)
    print(f"wrote {args.format} model to {path} ({', '.join(loaded.class_names)})")
    return path


def main(argv: Sequence[str] | None = None) -> Path:
    argv = sys.argv[1:] if argv is None else list(argv)
    return run_cli(lambda a: run(parse_key_values(a, ExportArguments, USAGE)), argv)


if __name__ == "__main__":
    main()
