"""task=cross_corpus: train on one generated corpus, test on another in a different
layout, over the classes they share (mapping explicit in config)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from ser.data.corpora import CORPORA, get_corpus
from ser.data.cross_corpus import shared_classes
from ser.data.synthetic import EMOTION_LETTERS, SyntheticCorpusSettings, generate_corpus
from ser.settings import ConfigError
from ser.tracking.results import read_json
from ser.training.engine import train
from ser.training.metrics import recall_metrics
from ser.training.protocols.cross_corpus import build_target_datamodule
from tests.helpers.cli_runs import concurrently
from tests.helpers.config import ROOT, TINY_DATA, cli_environment, compose_config, typed
from tests.helpers.wandb_records import offline_runs

# The synthetic generator's emotions as CASIA's folders (CASIA has no boredom or disgust).
CASIA_FOLDERS = {"anger": "angry", "fear": "fear", "happiness": "happy", "neutral": "neutral", "sadness": "sad"}


@pytest.fixture(scope="module")
def casia_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second generated corpus (another generator seed) laid out as CASIA:
    `<root>/<speaker>/<emotion>/<nnn>.wav`."""
    generated = tmp_path_factory.mktemp("generated")
    generate_corpus(generated, SyntheticCorpusSettings(num_speakers=2, utterances_per_class_per_speaker=2, seed=7))
    root = tmp_path_factory.mktemp("casia")
    letters = {letter: emotion for emotion, letter in EMOTION_LETTERS.items()}
    speakers = {"03": "liuchanhg", "08": "wangzhe"}
    numbers: dict[tuple[str, str], int] = {}
    for path in sorted((generated / "wav").glob("*.wav")):
        emotion = letters[path.name[5]]
        if emotion not in CASIA_FOLDERS:
            continue
        key = (speakers[path.name[:2]], CASIA_FOLDERS[emotion])
        numbers[key] = numbers.get(key, 200) + 1
        folder = root / key[0] / key[1]
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / f"{numbers[key]}.wav")
    return root


def cross_corpus_config(tiny_config, casia_root: Path, *overrides: str):
    return tiny_config(
        "task=cross_corpus", "+dataset@test_dataset=casia", f"test_dataset.root={casia_root}",
        "test_dataset.check_counts=false", *overrides,
    )


@pytest.mark.slow
def test_train_on_one_generated_corpus_and_test_on_another(tiny_config, casia_root, tmp_path) -> None:
    cfg = cross_corpus_config(tiny_config, casia_root, "cross_corpus.classes=null", "cross_corpus.repeats=2")
    uar = train(cfg)
    record = read_json(tmp_path / "run" / "results.json")
    shared = ["angry", "fear", "happy", "neutral", "sad"]  # both corpora's, in the source's order
    assert record["task"] == "cross_corpus" and record["status"] == "complete"
    assert record["class_names"] == shared
    assert record["source"]["corpus"] == "synthetic" and record["target"]["corpus"] == "casia"
    # All of the source's shared-class utterances train; all of the target's test.
    assert record["source"]["class_counts"] == {c: 4 for c in shared}
    assert record["target"]["class_counts"] == {c: 4 for c in shared}
    target_manifest = get_corpus("casia").build_manifest(casia_root, check_counts=False)
    runs = record["runs"]
    assert [run["repeat"] for run in runs] == [0, 1]
    assert [run["training_seed"] for run in runs] == [cfg.seed, cfg.seed + 1]
    for run in runs:
        confusion = np.array(run["confusion_matrix"])
        assert confusion.shape == (5, 5)
        assert confusion.sum(axis=1).tolist() == [4] * 5
        assert run["num_train"] == 20 and run["num_test"] == 20
        assert run["test/uar"] == pytest.approx(float(recall_metrics(confusion)["uar"]), abs=1e-6)
        assert run["test/war"] == pytest.approx(float(recall_metrics(confusion)["war"]), abs=1e-6)
        assert sorted(run["test_rows"]) == list(range(len(target_manifest)))
        assert all(s.startswith("casia/") for s in run["test_speakers"])
    assert uar == pytest.approx(np.mean([run["test/uar"] for run in runs]))
    assert record["summary"]["num_test_utterances"] == 40


@pytest.mark.slow
def test_class_map_and_validation_on_the_source(tiny_config, casia_root, tmp_path) -> None:
    # The source's boredom is scored as neutral; the validation split comes from the source.
    cfg = cross_corpus_config(
        tiny_config, casia_root, "+cross_corpus.class_map.synthetic={boredom: neutral}",
        "cv.validation=0.5", "cv.select=best_val_uar",
    )
    train(cfg)
    record = read_json(tmp_path / "run" / "results.json")
    assert record["class_names"] == ["angry", "happy", "neutral", "sad"]
    assert record["class_map"] == {"synthetic": {"boredom": "neutral"}}
    assert record["source"]["class_counts"] == {"angry": 4, "happy": 4, "neutral": 8, "sad": 4}
    assert record["target"]["class_counts"] == {"angry": 4, "happy": 4, "neutral": 4, "sad": 4}
    (run,) = record["runs"]
    assert run["num_train"] + run["num_validation"] == 20 and run["num_test"] == 16
    assert np.array(run["confusion_matrix"]).shape == (4, 4)



@pytest.mark.slow
def test_the_objective_is_what_a_sweeper_gets_as_in_cross_validation(tiny_config, casia_root, tmp_path) -> None:
    # A search (sweep=hpo) must choose on the source's validation split, never on the
    # target corpus's test set: train() returns the mean of `objective`.
    # 3 epochs: after 1 both splits score chance (0.25), which would hide the difference.
    cfg = cross_corpus_config(
        tiny_config, casia_root, "objective=val/uar", "cv.validation=0.5", "trainer.max_epochs=3",
    )
    returned = train(cfg)
    summary = read_json(tmp_path / "run" / "results.json")["summary"]
    assert summary["val/uar_mean"] != summary["test/uar_mean"]  # else the check below says nothing
    assert returned == pytest.approx(summary["val/uar_mean"])


def test_an_objective_the_run_cannot_measure_is_refused_before_training(tiny_config, casia_root, tmp_path) -> None:
    cfg = cross_corpus_config(tiny_config, casia_root, "objective=val/uar")  # no cv.validation
    with pytest.raises(ConfigError, match=r"objective=val/uar .*cv\.validation"):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()
    with pytest.raises(ConfigError, match="objective=test/war2"):
        train(cross_corpus_config(tiny_config, casia_root, "objective=test/war2"))


@pytest.mark.slow
def test_the_cross_corpus_command_line_as_users_run_it(casia_root, data_dir, tmp_path) -> None:
    # Progress bar on, the default logger (W&B offline): as a user starts it.
    args = [
        sys.executable, str(ROOT / "train.py"), "task=cross_corpus", "+dataset@test_dataset=casia",
        f"test_dataset.root={casia_root}", "test_dataset.check_counts=false", *TINY_DATA,
        f"paths.data_dir={data_dir}",
    ]

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*args, *extra], cwd=ROOT, env=cli_environment(), capture_output=True, text=True, timeout=300,
        )

    # The run, and beside it a search objective the run would not measure (refused).
    done, refused = concurrently(
        lambda: run(f"hydra.run.dir={tmp_path / 'cli'}"),
        lambda: run("objective=val/uar", f"hydra.run.dir={tmp_path / 'refused'}"),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    record = read_json(tmp_path / "cli" / "results.json")
    assert record["task"] == "cross_corpus" and record["status"] == "complete"
    assert record["target"]["corpus"] == "casia" and len(record["runs"]) == 1
    assert "Epoch 0/0" in done.stdout  # the progress bar
    runs = offline_runs(tmp_path / "cli")
    assert sorted(run["job_type"] for run in runs) == ["fold", "summary"]
    (fold,) = [run for run in runs if run["job_type"] == "fold"]
    assert fold["summary"]["test/uar"] == pytest.approx(record["runs"][0]["test/uar"])

    # The search objective the run would not measure: exit 2 before anything is written.
    assert refused.returncode == 2
    assert "error: objective=val/uar is not measured by this run" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not any((tmp_path / "refused").iterdir())

def test_the_default_classes_are_in_every_corpus() -> None:
    default = compose_config(["task=cross_corpus"]).cross_corpus.classes
    names = {name: corpus.class_names for name, corpus in CORPORA.items()}
    for source in names:
        for target in names:
            assert shared_classes(source, names[source], target, names[target], list(default)) == list(default)
    assert shared_classes("emodb", names["emodb"], "ravdess", names["ravdess"], None) == [
        "angry", "disgust", "fear", "happy", "neutral", "sad",
    ]


@pytest.mark.parametrize(
    ("wanted", "class_map", "message"),
    [
        (["angry", "surprise"], {}, r"\['surprise'\] not in emodb"),
        (["angry", "calm"], {}, r"\['calm'\] not in emodb"),
        (["angry", "angry"], {}, "names a class twice"),
        (["angry"], {}, "at least 2"),
        (["angry", "sad"], {"ravdess": {"clam": "neutral"}}, "renames \\['clam'\\], which ravdess does not have"),
    ],
)
def test_unshared_classes_and_bad_maps_are_clear_errors(wanted, class_map, message) -> None:
    with pytest.raises(ConfigError, match=message):
        shared_classes("emodb", CORPORA["emodb"].class_names, "ravdess", CORPORA["ravdess"].class_names, wanted, class_map)


def test_the_documented_command_composes_and_a_missing_target_is_refused(tiny_config) -> None:
    cfg = compose_config([
        "task=cross_corpus", "dataset=emodb", "dataset.root=/a", "+dataset@test_dataset=ravdess",
        "test_dataset.root=/b",
    ])
    assert cfg.task._target_ == "ser.training.protocols.cross_corpus.CrossCorpus"
    assert cfg.dataset.corpus == "emodb" and cfg.dataset.root == "/a"
    # The target is the dataset config itself, placed at test_dataset: nothing else.
    ravdess = compose_config(["dataset=ravdess"]).dataset
    assert {key: value for key, value in cfg.test_dataset.items() if key != "root"} == {
        key: value for key, value in ravdess.items() if key != "root"
    }
    assert cfg.test_dataset.root == "/b"
    with pytest.raises(ConfigError, match=r"\+dataset@test_dataset=NAME"):
        train(tiny_config("task=cross_corpus"))


def test_the_target_is_cut_to_the_sources_signal_length(tiny_config, tmp_path, capsys) -> None:
    # The synthetic config's own 33075 samples would give the model inputs of another
    # shape than the 11025 it trains on (TINY): the target's length is the source's.
    cfg = tiny_config(
        "task=cross_corpus", "+dataset@test_dataset=synthetic", f"test_dataset.root={tmp_path / 'target'}",
        "test_dataset.generator.num_speakers=2", "test_dataset.generator.utterances_per_class_per_speaker=1",
        "test_dataset.generator.seed=1",
    )
    assert cfg.test_dataset.signal_length == 33075 and cfg.dataset.signal_length == 11025
    source = SimpleNamespace(feature_settings=SimpleNamespace(signal_length=11025), corpus=SimpleNamespace(name="synthetic"))
    target = build_target_datamodule(typed(cfg).test_dataset, source, progress=False)
    assert target.feature_settings.signal_length == 11025
    assert target.features.shape[1] == 1 + 11025 // 512  # frames of the source's length
    assert "test_dataset.signal_length=33075 is not used" in capsys.readouterr().out
