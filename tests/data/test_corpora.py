"""The six corpus layouts: labels, speakers, exclusions, merges and row order on tiny trees.

Each tree is built in the corpus's exact layout with generated WAVs (a few ms of noise).
The tree builders (tests/helpers/corpus_trees.py) are shared with the bad-input and
summary tests.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import open_dict

from ser.data.corpora import CorpusError, get_corpus, natural_key
from ser.data.datamodule import CorpusDataModule
from tests.helpers.audio_files import write_wav
from tests.helpers.config import compose_config, one_torch_thread, typed_config
from tests.helpers.corpus_trees import (
    SAVEE_CODES,
    full_emodb_names,
    make_casia_tree,
    make_emodb_tree,
    make_emovo_tree,
    make_iemocap_tree,
    make_ravdess_tree,
    make_savee_tree,
)

SPEC_SIGNAL_LENGTHS = {
    "casia": 88000, "emodb": 96000, "emovo": 96000,
    "iemocap": 310000, "ravdess": 110000, "savee": 130000,
}
SPEC_SPLIT_SEEDS = {"casia": 32, "emodb": 46, "emovo": 1, "iemocap": 16, "ravdess": 46, "savee": 44}
SPEC_CLASS_ORDERS = {
    "casia": ["angry", "fear", "happy", "neutral", "sad", "surprise"],
    "emodb": ["angry", "boredom", "disgust", "fear", "happy", "neutral", "sad"],
    "emovo": ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"],
    "iemocap": ["angry", "happy", "neutral", "sad"],
    "ravdess": ["angry", "calm", "disgust", "fear", "happy", "neutral", "sad", "surprise"],
    "savee": ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"],
}


def parse(corpus: str, root: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tiny trees are partial copies by design
        return get_corpus(corpus).build_manifest(root)


def relative(manifest, root: Path) -> list[str]:
    return [str(Path(u.path).relative_to(root)) for u in manifest.utterances]


# ----------------------------------------------------------------------------- names


def test_natural_key_orders_numbers_by_value() -> None:
    names = ["n10.wav", "n2.wav", "N1.wav", "b2.wav"]
    assert sorted(names, key=natural_key) == ["b2.wav", "N1.wav", "n2.wav", "n10.wav"]


# ----------------------------------------------------------------------------- layouts


def test_emodb_letters_speakers_and_order(tmp_path: Path) -> None:
    names = ["03a01Wa.wav", "16b10Ab.wav", "03a01Fa.wav", "10a02Aa.wav", "08b01Nc.wav", "03a02Wa.wav"]
    root = make_emodb_tree(tmp_path / "emodb", names)
    manifest = parse("emodb", root)
    assert relative(manifest, root) == [
        "wav/03a01Wa.wav", "wav/03a02Wa.wav",  # angry (W = Wut)
        "wav/10a02Aa.wav", "wav/16b10Ab.wav",  # fear (A = Angst, not anger)
        "wav/03a01Fa.wav",  # happy
        "wav/08b01Nc.wav",  # neutral
    ]
    assert [u.label for u in manifest.utterances] == ["angry", "angry", "fear", "fear", "happy", "neutral"]
    assert manifest.speakers == ["03", "03", "10", "16", "03", "08"]
    assert manifest.utterances[3].text == "b10"


def test_casia_layout(tmp_path: Path) -> None:
    root = make_casia_tree(tmp_path / "casia")
    manifest = parse("casia", root)
    assert len(manifest) == 2 * 6 * 3  # litter ignored
    assert manifest.class_counts() == {name: 6 for name in SPEC_CLASS_ORDERS["casia"]}
    # Class, then file name, then (equal names) the speaker folder.
    assert relative(manifest, root)[:6] == [
        "liuchanhg/angry/201.wav", "wangzhe/angry/201.wav",
        "liuchanhg/angry/202.wav", "wangzhe/angry/202.wav",
        "liuchanhg/angry/210.wav", "wangzhe/angry/210.wav",
    ]
    assert manifest.speakers[:2] == ["liuchanhg", "wangzhe"]
    assert [u.text for u in manifest.utterances[:3]] == ["201", "201", "202"]
    assert [u.label for u in manifest.utterances[-6:]] == ["surprise"] * 6


def test_emovo_layout(tmp_path: Path) -> None:
    root = make_emovo_tree(tmp_path / "emovo")
    manifest = parse("emovo", root)
    assert len(manifest) == 2 * 7 * 4
    labels = {Path(u.path).name[:3]: u.label for u in manifest.utterances}
    assert labels == {
        "dis": "disgust", "gio": "happy", "neu": "neutral", "pau": "fear",
        "rab": "angry", "sor": "surprise", "tri": "sad",
    }
    # angry first (rab), natural file-name order: "-b1" < "-b2" < "-n2" < "-n10" within a speaker.
    assert [Path(p).name for p in relative(manifest, root)[:8]] == [
        "rab-f1-b1.wav", "rab-f1-b2.wav", "rab-f1-n2.wav", "rab-f1-n10.wav",
        "rab-m2-b1.wav", "rab-m2-b2.wav", "rab-m2-n2.wav", "rab-m2-n10.wav",
    ]
    assert set(manifest.speakers) == {"f1", "m2"}
    assert manifest.utterances[3].text == "n10"


def test_iemocap_labels_merges_speakers_and_sessions(tmp_path: Path) -> None:
    root = make_iemocap_tree(tmp_path / "iemocap")
    corpus = get_corpus("iemocap")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        manifest = corpus.build_manifest(root)
    ids = [Path(u.path).stem for u in manifest.utterances]
    assert ids == [
        "Ses01F_impro01_M013",  # angry
        "Ses01F_impro01_F002", "Ses01F_impro01_F010", "Ses02M_impro03_M001",  # happy (hap + exc)
        "Ses01F_impro01_F000", "Ses02M_impro03_F003",  # neutral
        "Ses01M_script01_1_F005",  # sad
    ]
    assert [u.label for u in manifest.utterances] == [
        "angry", "happy", "happy", "happy", "neutral", "neutral", "sad",
    ]
    # The speaker's gender is the last part's letter, not the dialog side's.
    assert manifest.speakers == [
        "Session1_M", "Session1_F", "Session1_F", "Session2_M", "Session1_F", "Session2_F", "Session1_F",
    ]
    assert [u.session for u in manifest.utterances] == [
        "Session1", "Session1", "Session1", "Session2", "Session1", "Session2", "Session1",
    ]
    assert relative(manifest, root)[0] == "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_M013.wav"
    assert relative(manifest, root)[-1] == (
        "Session1/sentences/wav/Ses01M_script01_1/Ses01M_script01_1_F005.wav"
    )
    assert corpus.excluded == {
        "label fru": 1, "label xxx": 1, "label sur": 1, "label oth": 1, "exc merged into happy": 2,
    }


def test_ravdess_layout_exclusions_and_actors(tmp_path: Path) -> None:
    root = make_ravdess_tree(tmp_path / "ravdess")
    corpus = get_corpus("ravdess")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        manifest = corpus.build_manifest(root)
    assert len(manifest) == 2 * 8 * 2
    assert all(Path(u.path).name.startswith("03-01-") for u in manifest.utterances)
    assert corpus.excluded == {"song (vocal channel 02)": 2, "not audio-only (modality 01/02)": 4}
    names = [Path(u.path).name for u in manifest.utterances]
    # angry (05) first; natural name order puts actor 01 before 02 and statement 01 first.
    assert names[:4] == [
        "03-01-05-01-01-01-01.wav", "03-01-05-01-01-01-02.wav",
        "03-01-05-01-02-01-01.wav", "03-01-05-01-02-01-02.wav",
    ]
    by_code = {Path(u.path).name[6:8]: u.label for u in manifest.utterances}
    assert by_code == {
        "01": "neutral", "02": "calm", "03": "happy", "04": "sad",
        "05": "angry", "06": "fear", "07": "disgust", "08": "surprise",
    }
    assert manifest.speakers[:4] == ["01", "02", "01", "02"]
    assert [u.text for u in manifest.utterances[:4]] == ["01", "01", "02", "02"]


@pytest.mark.parametrize("flat", [False, True], ids=["AudioData", "flat"])
def test_savee_layouts(tmp_path: Path, flat: bool) -> None:
    root = make_savee_tree(tmp_path / "savee", flat=flat)
    manifest = parse("savee", root)
    assert len(manifest) == 2 * 7 * 3
    rows = [(u.label, u.speaker, u.text) for u in manifest.utterances]
    assert rows[:6] == [
        ("angry", "DC", "a01"), ("angry", "DC", "a02"), ("angry", "DC", "a10"),
        ("angry", "JK", "a01"), ("angry", "JK", "a02"), ("angry", "JK", "a10"),
    ]
    labels = {u.text.rstrip("0123456789"): u.label for u in manifest.utterances}
    assert labels == {
        "a": "angry", "d": "disgust", "f": "fear", "h": "happy",
        "n": "neutral", "sa": "sad", "su": "surprise",
    }


def test_savee_layouts_give_the_same_rows(tmp_path: Path) -> None:
    original = parse("savee", make_savee_tree(tmp_path / "original", flat=False))
    flat = parse("savee", make_savee_tree(tmp_path / "flat", flat=True))
    assert [(u.label, u.speaker, u.text) for u in original.utterances] == [
        (u.label, u.speaker, u.text) for u in flat.utterances
    ]
    # Pointing at AudioData itself works too.
    inner = parse("savee", tmp_path / "original" / "AudioData")
    assert [u.path for u in inner.utterances] == [u.path for u in original.utterances]


def test_partial_copy_warns_per_class(tmp_path: Path) -> None:
    root = make_emodb_tree(tmp_path / "emodb", ["03a01Wa.wav", "03a01Fa.wav"])
    with pytest.warns(UserWarning, match=r"looks partial \(2 of 535.*angry: found 1, expected 127"):
        get_corpus("emodb").build_manifest(root)


def test_complete_savee_copy_does_not_warn(tmp_path: Path) -> None:
    root = tmp_path / "savee"
    for speaker in ("DC", "JE", "JK", "KL"):
        for code in SAVEE_CODES:
            for number in range(1, (31 if code == "n" else 16)):
                write_wav(root / f"{speaker}_{code}{number:02d}.wav", seconds=0.001)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        manifest = get_corpus("savee").build_manifest(root)
    assert len(manifest) == 480
    assert manifest.class_counts() == get_corpus("savee").expected_counts


# ----------------------------------------------------------------------------- DataModules and configs

CORPORA = ["casia", "emodb", "emovo", "iemocap", "ravdess", "savee"]


@pytest.mark.parametrize("name", CORPORA)
def test_dataset_config_builds_its_datamodule(name: str, tmp_path: Path) -> None:
    cfg = compose_config([f"dataset={name}", f"dataset.root={tmp_path}"])
    assert cfg.dataset.corpus == name and cfg.dataset.signal_length is None
    with open_dict(cfg):
        cfg.paths.data_dir = str(tmp_path)
    # Every setting of the group is the DataModule's.
    module = instantiate(cfg.dataset, _recursive_=False, _convert_="all")
    assert type(module) is CorpusDataModule  # one DataModule; `corpus:` picks the layout
    assert module.corpus.name == name
    assert module.feature_settings.signal_length == SPEC_SIGNAL_LENGTHS[name]
    assert module.class_names == SPEC_CLASS_ORDERS[name]


@pytest.mark.parametrize("name", CORPORA)
def test_the_paper_experiment_takes_each_corpus_from_its_definition(name: str, tmp_path: Path) -> None:
    """`experiment=paper dataset=X`: the paper's settings, and the corpus's own length and
    split seed from its definition (ser.data.corpora), as the run uses them."""
    paper = ["experiment=paper", f"dataset={name}", f"dataset.root={tmp_path}", f"paths.data_dir={tmp_path}"]
    cfg = compose_config(paper)
    assert cfg.dataset.corpus == name and cfg.dataset.batch_size == 64
    assert cfg.trainer.max_epochs == 200
    assert cfg.cv.folds == 10 and cfg.cv.strategy == "kfold" and cfg.cv.select == "last"
    assert cfg.features.kind == "mfcc" and cfg.features.pad_mode == "reflect" and cfg.features.n_mfcc == 39
    assert cfg.model.net._target_ == "ser.models.MSSENet" and cfg.model.net.num_blocks == 10
    assert cfg.model.optimizer.lr == 0.001 and list(cfg.model.optimizer.betas) == [0.93, 0.98]
    assert cfg.model.optimizer.eps == 1e-8 and cfg.model.label_smoothing == 0.1
    module = instantiate(cfg.dataset, _recursive_=False, _convert_="all")
    assert module.feature_settings.signal_length == SPEC_SIGNAL_LENGTHS[name]
    assert typed_config(paper).cv.split_seed(module.corpus.split_seed) == SPEC_SPLIT_SEEDS[name]
    # TIM-Net in the same setup: the TIM-Net code's 8 blocks, 10 on IEMOCAP.
    timnet = compose_config([*paper, "model=timnet"])
    assert timnet.model.net._target_ == "ser.models.TIMNet"
    assert timnet.model.net.num_blocks == (10 if name == "iemocap" else 8)
    assert timnet.trainer.max_epochs == 200 and timnet.features.pad_mode == "reflect"


def test_ravdess_datamodule_extracts_and_reuses_cache(tmp_path: Path) -> None:
    root = make_ravdess_tree(tmp_path / "ravdess")
    kwargs = dict(
        root=str(root), features={}, cache_dir=str(tmp_path / "cache"), signal_length=2048,
        feature_device="cpu", load_threads=1,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = CorpusDataModule(corpus="ravdess", **kwargs)
        module.prepare_data()
        assert module.features.shape == (32, 5, 39)
        assert module.targets.tolist()[:4] == [0, 0, 0, 0]
        cached = list((tmp_path / "cache").glob("features-ravdess-*.pt"))
        assert len(cached) == 1
        again = CorpusDataModule(corpus="ravdess", **kwargs)
        again._extract = None  # a cache hit must not extract
        again.prepare_data()
    assert np.array_equal(again.features.numpy(), module.features.numpy())


# ----------------------------------------------------------------------------- a complete EMODB copy


@pytest.mark.slow
def test_full_emodb_copy_cross_validation_counts(tmp_path: Path) -> None:
    """535 tiny files with EMODB's counts through the real driver: every utterance tests once."""
    from ser.training.engine import train

    root = tmp_path / "emodb"
    for i, name in enumerate(full_emodb_names()):
        # Written at the feature rate: this test is about counts, not resampling.
        write_wav(root / "wav" / name, seconds=0.05, sample_rate=22050, seed=i)
    # TIM-Net with one block: the smallest network the driver builds (seconds per fold
    # on two shared cores); the counts do not depend on the network.
    cfg = compose_config([
        "dataset=emodb", f"dataset.root={root}", "dataset.signal_length=1024",
        "dataset.load_threads=1", "dataset.feature_device=cpu",
        "cv.folds=10", "trainer.max_epochs=1", "trainer.accelerator=cpu",
        "model=timnet", "model.net.num_blocks=1", "logger=none", "callbacks=none",
        "progress=false",
    ])
    with open_dict(cfg):
        cfg.paths.data_dir = str(tmp_path / "data")
        cfg.paths.output_dir = str(tmp_path / "run")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # a complete copy: no partial warning
        warnings.filterwarnings("ignore", module="pytorch_lightning")
        warnings.filterwarnings("ignore", module="lightning_fabric")
        warnings.filterwarnings("ignore", module="torch")
        with one_torch_thread():
            train(cfg)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["num_utterances"] == 535 and len(results["folds"]) == 10
    matrices = np.array([fold["confusion_matrix"] for fold in results["folds"]])
    total = matrices.sum(axis=0)
    assert int(total.sum()) == 535
    expected = get_corpus("emodb").expected_counts
    assert total.sum(axis=1).tolist() == list(expected.values())
    tested = sorted(row for fold in results["folds"] for row in fold["test_rows"])
    assert tested == list(range(535))
    assert results["seeds"]["split"] == 46 and results["skipped_files"] == []


def test_unknown_corpus_name_lists_known_ones() -> None:
    with pytest.raises(CorpusError, match="unknown corpus 'berlin'.*emodb"):
        get_corpus("berlin")


@pytest.mark.gpu
def test_gpu_feature_extraction_matches_cpu(tmp_path: Path) -> None:
    root = make_savee_tree(tmp_path / "savee", flat=True)
    features = {}
    for device in ("cpu", "cuda"):
        module = CorpusDataModule(
            corpus="savee", root=str(root), features={}, signal_length=22050, feature_device=device,
            check_counts=False,
        )
        module.prepare_data()
        features[device] = module.features
    assert features["cuda"].device.type == "cpu"  # features are kept in host memory
    # dB values of noise: float32 differences between the two FFT implementations.
    assert torch.allclose(features["cpu"], features["cuda"], atol=1e-2)
