"""Classify audio files with a trained checkpoint; no DataModule needed.

    python -m ser.tools.predict checkpoint=CKPT audio=FILE_OR_DIR [output=CSV] [device=cpu] [batch_size=16]

Prints each file's class probabilities and, with `output=`, writes a CSV (`path,
predicted, <one column per class>`); a folder is searched recursively for
.wav/.flac/.ogg files. A `features=ssl` checkpoint loads the weights file it was trained
with, or `feature_weights=PATH`, refusing other bytes (sha256). Bad input ends with one
line naming the file, exit code 2.
"""

from __future__ import annotations

import csv
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import MISSING

from ser.cli import parse_key_values, run_cli
from ser.tools.inference import (
    Prediction,
    check_output_path,
    find_audio_files,
    load_checkpoint,
    predict_files,
    resolve_device,
)

USAGE = (
    "usage: ser-predict (or python -m ser.tools.predict) checkpoint=CKPT audio=FILE_OR_DIR "
    "[output=CSV] [device=cpu|cuda|auto] [batch_size=16] [feature_weights=PATH]"
)


@dataclass
class PredictArguments:
    checkpoint: str = field(default=MISSING, metadata={"help": "a checkpoint of ser-train"})
    audio: str = field(default=MISSING, metadata={"help": "an audio file or a folder of them"})
    output: str | None = field(default=None, metadata={"help": "also write the table as CSV"})
    device: str = field(default="cpu", metadata={"help": "cpu, cuda or auto"})
    batch_size: int = field(default=16, metadata={"help": "files per forward pass"})
    feature_weights: str | None = field(
        default=None,
        metadata={"help": "features=ssl checkpoints: the self-supervised model's weights, if not where training read them"},
    )


def write_csv(predictions: Sequence[Prediction], class_names: Sequence[str], path: Path) -> Path:
    """One row per file: path, predicted class, one probability column per class."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", newline="", encoding="utf-8") as stream:
            writer = csv.writer(stream)
            writer.writerow(["path", "predicted", *class_names])
            for prediction in predictions:
                writer.writerow(
                    [str(prediction.path), prediction.predicted(class_names)]
                    + [f"{p:.6f}" for p in prediction.probabilities]
                )
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def print_table(
    predictions: Sequence[Prediction], class_names: Sequence[str], title: str, root: Path | None
) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(title))
    table.add_column("file")
    table.add_column("predicted")
    for name in class_names:
        table.add_column(escape(name), justify="right")
    for prediction in predictions:
        best = int(prediction.probabilities.argmax())
        shown = prediction.path.relative_to(root) if root is not None else prediction.path
        cells = [
            f"[bold]{p:.3f}[/bold]" if i == best else f"{p:.3f}"
            for i, p in enumerate(prediction.probabilities)
        ]
        table.add_row(escape(str(shown)), escape(class_names[best]), *cells)
    console = Console()
    if not console.is_terminal:
        # Piped or captured output has no width to respect; never truncate the numbers.
        console = Console(width=max(120, 40 + 10 * len(class_names)))
    console.print(table)


def predict(args: PredictArguments) -> list[Prediction]:
    """Run the CLI's work on parsed arguments; returns the predictions."""
    device = resolve_device(str(args.device))
    files = find_audio_files(args.audio)  # before loading the model: fail fast on a typo
    if args.output:  # before any work: never in place of what is read
        inputs = {"an audio file being classified": files, "the checkpoint": [Path(args.checkpoint)]}
        check_output_path("output", args.output, inputs, "predictions.csv")
    loaded = load_checkpoint(args.checkpoint, device=device, feature_weights=args.feature_weights)
    predictions = predict_files(loaded, files, batch_size=int(args.batch_size))
    audio = Path(args.audio)
    print_table(predictions, loaded.class_names, f"{loaded.path}", audio if audio.is_dir() else None)
    if args.output:
        path = write_csv(predictions, loaded.class_names, Path(args.output))
        print(f"wrote {path}")
    return predictions


def main(argv: Sequence[str] | None = None) -> list[Prediction]:
    argv = sys.argv[1:] if argv is None else list(argv)
    return run_cli(lambda a: predict(parse_key_values(a, PredictArguments, USAGE)), argv)


if __name__ == "__main__":
    main()
