"""Stand-ins for objects a run builds, for tests of what reads them."""

from __future__ import annotations

from types import SimpleNamespace

CLASSES = ["angry", "happy", "neutral", "sad"]


def prepared_datamodule(input_dim: int = 39) -> SimpleNamespace:
    """What build_module reads from a prepared DataModule, known only at run time."""
    return SimpleNamespace(
        num_classes=len(CLASSES), input_dim=input_dim, class_names=list(CLASSES),
        feature_settings=SimpleNamespace(signal_length=11025), corpus=SimpleNamespace(name="synthetic"),
        data_identity=lambda: "0" * 16,  # what the checkpoint records of the data
    )
