"""End to end through `python train.py`, as a user runs it (progress bar on, W&B offline):
a manifest of the synthetic corpus gives the synthetic corpus's folds and results, and
`features=ssl` with local weights trains on a small corpus."""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from ser.data.corpora import get_corpus
from ser.data.synthetic import SyntheticCorpusSettings, ensure_corpus
from ser.training.checkpoint import read_checkpoint
from tests.helpers.audio_files import write_noise
from tests.helpers.cli_runs import (
    concurrently,
    run_predict,
    run_train_py,
    selected_probes,
    started_together,
)
from tests.helpers.config import TINY_DATA, compose_config
from tests.helpers.ssl_models import save_random_weights


def results(output: Path) -> dict:
    return json.loads((output / "results.json").read_text())


def fold_figures(record: dict) -> list[tuple]:
    return [
        (f["fold"], f["test/uar"], f["test/war"], f["test/loss"], f["confusion_matrix"], f["test_rows"], f["num_train"])
        for f in record["folds"]
    ]


def synthetic_and_manifest(folder: Path) -> tuple[Path, Path]:
    """A tiny synthetic run and a run of a manifest of its corpus, at once: their output directories."""
    data = folder / "data"
    synthetic = folder / "synthetic"
    # The corpus the synthetic run reads (it finds it generated), so that both runs can go at once.
    ensure_corpus(data / "synthetic", SyntheticCorpusSettings(**compose_config(TINY_DATA).dataset.generator))
    # The manifest: the synthetic corpus's rows, written in another folder with relative paths.
    rows = get_corpus("synthetic").build_manifest(data / "synthetic").utterances
    (folder / "lists").mkdir()
    manifest = folder / "lists" / "synthetic.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "speaker"])
        writer.writerows([f"../data/synthetic/wav/{Path(u.path).name}", u.label, u.speaker] for u in rows)
    mine = folder / "manifest"
    concurrently(
        lambda: run_train_py([*TINY_DATA, f"paths.data_dir={data}", f"hydra.run.dir={synthetic}"], cwd=folder),
        lambda: run_train_py([
            "dataset=manifest", f"dataset.path={manifest}", "dataset.signal_length=11025", "dataset.batch_size=16",
            "cv.folds=2", "cv.seed=46", "trainer.max_epochs=1", "model.net.num_blocks=2",
            f"paths.data_dir={data}", f"hydra.run.dir={mine}",
        ], cwd=folder),
    )
    return synthetic, mine


def ssl_run(folder: Path) -> tuple[Path, Path, str]:
    """WavLM Base+ (its real architecture, random weights from a local file) into MS-SENet:
    (the weights, the output directory, the run's output)."""
    weights = save_random_weights("WAVLM_BASE_PLUS", folder / "weights" / "wavlm_base_plus.pt")
    output = folder / "run"
    log = run_train_py([
        *TINY_DATA, "features=ssl", f"features.weights={weights}", "features.layer=6",
        f"paths.data_dir={folder / 'data'}", f"hydra.run.dir={output}",
    ], cwd=folder, timeout=600)
    return weights, output, log


SPLITS = ("train", "train", "val", "test")


def predefined_split_run(folder: Path) -> tuple[list[dict], Path]:
    """`cv=predefined` on a JSONL manifest with a split column: (its rows, the output directory)."""
    rows = []
    for i in range(18):
        label, split = ("calm", "tense", "upset")[i % 3], SPLITS[i % 4] if i < 16 else "train"
        write_noise(folder / "clips" / f"{i}.wav", seconds=0.3, seed=i)
        rows.append({"path": f"clips/{i}.wav", "label": label, "split": split, "speaker": f"s{i % 2}"})
    manifest = folder / "all.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    output = folder / "run"
    run_train_py([
        "dataset=manifest", f"dataset.path={manifest}", "cv=predefined", "cv.select=best_val_uar",
        "trainer.max_epochs=2", "model.net.num_blocks=2", f"paths.data_dir={folder / 'data'}",
        f"hydra.run.dir={output}",
    ], cwd=folder)
    return rows, output


@pytest.fixture(scope="module")
def runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """The training runs of the tests below, started together (two tests' at a time), each
    in a folder of its own: {test: what its run returns}."""
    training = (
        (test_a_manifest_of_the_synthetic_corpus_reproduces_its_folds, synthetic_and_manifest),
        (test_ssl_features_with_local_weights_train_end_to_end, ssl_run),
        (test_the_split_column_is_the_protocol, predefined_split_run),
    )
    with started_together(selected_probes(request, tmp_path_factory, training)) as started:
        yield started


@pytest.mark.slow
def test_a_manifest_of_the_synthetic_corpus_reproduces_its_folds(runs: dict) -> None:
    synthetic, mine = runs["test_a_manifest_of_the_synthetic_corpus_reproduces_its_folds"].result()
    expected, found = results(synthetic), results(mine)
    assert found["corpus"] == "manifest" and expected["corpus"] == "synthetic"
    assert found["class_names"] == expected["class_names"] and found["class_counts"] == expected["class_counts"]
    assert found["seeds"] == expected["seeds"] == {"training": 1234, "split": 46}
    assert fold_figures(found) == fold_figures(expected)
    assert found["summary"] == expected["summary"]


@pytest.mark.slow
def test_ssl_features_with_local_weights_train_end_to_end(runs: dict) -> None:
    """WavLM Base+ (its real architecture, random weights from a local file) into MS-SENet."""
    weights, output, log = runs["test_ssl_features_with_local_weights_train_end_to_end"].result()
    tmp_path = output.parent
    record = results(output)
    assert record["status"] == "complete" and len(record["folds"]) == 2
    assert record["variant"].endswith("-ssl") and record["num_utterances"] == 28
    assert sorted(r for f in record["folds"] for r in f["test_rows"]) == list(range(28))
    checkpoint = read_checkpoint(output / "checkpoints" / "fold_00" / "last.ckpt")
    metadata = checkpoint["ser_metadata"]
    assert metadata["net"]["input_dim"] == 768  # the network's width is the features'
    assert metadata["feature_settings"]["kind"] == "ssl" and metadata["feature_settings"]["layer"] == 6
    # dataset.signal_length=11025 samples at 16 kHz: 34 frames of 768.
    cached = list((tmp_path / "data").rglob("features-synthetic-*.pt"))
    assert len(cached) == 1
    assert torch.load(cached[0], weights_only=True)["features"].shape == (28, 34, 768)
    assert "Traceback" not in log
    # The checkpoint classifies new audio with the feature model's weights it was trained
    # on (their sha256 is in it), from their file or from feature_weights=PATH elsewhere.
    assert metadata["feature_weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    audio = write_noise(tmp_path / "new.wav", seconds=0.5)
    checkpoint_file = output / "checkpoints" / "fold_00" / "last.ckpt"
    assert run_predict(f"checkpoint={checkpoint_file}", f"audio={audio}").returncode == 0
    moved = tmp_path / "elsewhere.pt"
    weights.rename(moved)
    save_random_weights("WAVLM_BASE_PLUS", weights, seed=1)  # other bytes under the trained name
    refused = run_predict(f"checkpoint={checkpoint_file}", f"audio={audio}")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert f"but {weights} has sha256" in refused.stderr and "feature_weights=PATH" in refused.stderr
    assert run_predict(f"checkpoint={checkpoint_file}", f"audio={audio}", f"feature_weights={moved}").returncode == 0


@pytest.mark.slow
def test_the_split_column_is_the_protocol(runs: dict) -> None:
    """`cv=predefined`: one fold, trained on split=train, validated on split=val (which
    chooses the tested epoch) and tested on split=test, from a JSONL manifest."""
    rows, output = runs["test_the_split_column_is_the_protocol"].result()
    record = results(output)
    assert record["cv"]["strategy"] == "predefined" and len(record["folds"]) == 1
    fold = record["folds"][0]
    by_split = {name: [i for i, row in enumerate(rows) if row["split"] == name] for name in ("train", "val", "test")}
    assert fold["test_rows"] == by_split["test"] and fold["validation_rows"] == by_split["val"]
    assert fold["num_train"] == len(by_split["train"]) and fold["select"] == "best_val_uar"
    assert record["class_names"] == ["calm", "tense", "upset"]
