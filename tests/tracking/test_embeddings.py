"""plots.embeddings: t-SNE of net.embed on the test folds, as a PNG and a W&B image."""

from __future__ import annotations

import time
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch

from ser.models import MSSENet
from ser.tracking.embeddings import FoldEmbeddings, compute_embeddings, plot_embeddings_tsne
from ser.training.config import config_hash
from ser.training.engine import train
from tests.helpers.wandb_records import offline_runs

CLASS_NAMES = ["angry", "boredom", "disgust", "fear", "happy", "neutral", "sad"]


def summary_runs(output: Path, timeout: float = 20.0) -> list[dict]:
    """The W&B summary runs; waits for wandb-core, which may still be writing after finish()."""
    deadline = time.monotonic() + timeout
    while True:
        runs = offline_runs(output)
        complete = all("job_type" in run for run in runs)
        summaries = [run for run in runs if run.get("job_type") == "summary"]
        if (complete and summaries) or time.monotonic() > deadline:
            return summaries
        time.sleep(0.2)


def test_tsne_png_has_one_point_per_test_utterance(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    sizes = {0: 12, 1: 9, 2: 3}  # fold 2 is too small for t-SNE (principal components)
    folds = [
        FoldEmbeddings(fold, rng.normal(size=(n, 39)), rng.integers(0, 7, n), np.arange(n))
        for fold, n in sizes.items()
    ]
    path = tmp_path / "plots" / "embeddings_tsne.png"
    points = plot_embeddings_tsne(folds, CLASS_NAMES, path, seed=0)
    assert {fold: p.shape for fold, p in points.items()} == {f: (n, 2) for f, n in sizes.items()}
    assert all(np.isfinite(p).all() for p in points.values())
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_embeddings_are_the_fused_vector_the_classifier_reads() -> None:
    torch.manual_seed(0)
    net = MSSENet(7, num_blocks=2).train()
    x = torch.randn(5, 22, 39)
    z = compute_embeddings(net, x, batch_size=2)
    assert net.training  # the mode is restored
    net.eval()
    with torch.no_grad():
        np.testing.assert_allclose(net.classifier(torch.from_numpy(z)), net(x), atol=1e-5)
    assert z.shape == (5, 39)


@pytest.mark.slow
def test_a_run_with_plots_writes_the_png_and_logs_it_to_wandb(tiny_config) -> None:
    cfg = tiny_config("plots.embeddings=true", "logger=wandb")
    assert config_hash(cfg) == config_hash(tiny_config("logger=wandb"))  # plots change no result
    train(cfg)
    output = Path(cfg.paths.output_dir)
    assert (output / "embeddings_tsne.png").exists()
    saved = [np.load(output / "embeddings" / f"fold_{k:02d}.npz") for k in (0, 1)]
    rows = sorted(int(r) for data in saved for r in data["rows"])
    assert rows == list(range(2 * 2 * 7))  # every utterance once, from its test fold
    assert all(data["embeddings"].shape == (len(data["rows"]), 39) for data in saved)
    summary = summary_runs(output)
    assert len(summary) == 1
    assert "embeddings/tsne/_type" in summary[0]["history_keys"]
    assert summary[0]["summary"]["embeddings/tsne/_type"] == "image-file"


