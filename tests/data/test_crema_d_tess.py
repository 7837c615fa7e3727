"""CREMA-D and TESS: their real layouts, complete-copy counts, summaries and class matching.

The trees are generated in each corpus's layout with one tiny WAV copied to every name
(tests/helpers/corpus_trees.py); a complete tree has the corpus's exact counts.
"""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

import pytest

from ser.data.corpora import CorpusError, get_corpus, recognise
from ser.data.cross_corpus import shared_classes
from ser.data.datamodule import CorpusDataModule
from ser.data.summary import summarise
from tests.helpers.audio_files import write_wav
from tests.helpers.config import compose_config
from tests.helpers.corpus_trees import (
    crema_d_names,
    make_crema_d_tree,
    make_tess_tree,
)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_wav(tmp_path_factory.mktemp("wav") / "clip.wav", seconds=0.01)


def parse(corpus: str, root: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tiny trees are partial copies by design
        return get_corpus(corpus).build_manifest(root)


# ----------------------------------------------------------------------------- CREMA-D


def test_crema_d_layout_labels_speakers_and_order(tmp_path: Path, template: Path) -> None:
    names = ["1002_IEO_SAD_HI.wav", "1001_DFA_ANG_XX.wav", "1001_IEO_ANG_LO.wav", "1010_TIE_NEU_XX.wav",
             "1001_ITS_FEA_MD.wav", "1091_WSI_DIS_XX.wav", "1002_IOM_HAP_XX.wav"]
    root = make_crema_d_tree(tmp_path / "CREMA-D", names, template)
    corpus = get_corpus("crema_d")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        manifest = corpus.build_manifest(root)
    assert [Path(u.path).name for u in manifest.utterances] == [
        "1001_DFA_ANG_XX.wav", "1001_IEO_ANG_LO.wav", "1091_WSI_DIS_XX.wav", "1001_ITS_FEA_MD.wav",
        "1002_IOM_HAP_XX.wav", "1010_TIE_NEU_XX.wav", "1002_IEO_SAD_HI.wav",
    ]
    assert [u.label for u in manifest.utterances] == [
        "angry", "angry", "disgust", "fear", "happy", "neutral", "sad",
    ]
    assert manifest.speakers == ["1001", "1001", "1091", "1001", "1002", "1010", "1002"]
    assert [u.text for u in manifest.utterances][:2] == ["DFA", "IEO"]
    # The MP3 copies and video folders are not counted; hidden files are not read.
    assert all("/AudioWAV/" in u.path for u in manifest.utterances)
    assert corpus.excluded == {"folders besides AudioWAV (not read: AudioMP3, VideoFlash, VideoMp4)": 3}
    # dataset.root may be AudioWAV itself: the same rows.
    inner = parse("crema_d", root / "AudioWAV")
    assert [u.path for u in inner.utterances] == [u.path for u in manifest.utterances]


def test_complete_crema_d_copy_has_its_counts(tmp_path: Path, template: Path) -> None:
    names = crema_d_names()
    root = make_crema_d_tree(tmp_path / "CREMA-D", names, template)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a complete copy: no partial-copy warning
        manifest = get_corpus("crema_d").build_manifest(root)
    assert len(manifest) == 7442
    assert manifest.class_counts() == {
        "angry": 1271, "disgust": 1271, "fear": 1271, "happy": 1271, "neutral": 1087, "sad": 1271,
    }
    per_speaker = Counter(manifest.speakers)
    assert len(per_speaker) == 91 and sorted(per_speaker)[0] == "1001" and sorted(per_speaker)[-1] == "1091"
    expected = Counter(name.split("_")[0] for name in names)
    assert per_speaker == expected
    assert per_speaker["1001"] == 82 and per_speaker["1091"] == 82 - 6
    assert len({u.text for u in manifest.utterances}) == 12
    summary = summarise(CorpusDataModule(corpus="crema_d", root=str(root), features={}))
    assert summary.complete and summary.num_utterances == summary.expected_total == 7442
    assert {row.name: row.found for row in summary.speakers} == dict(expected)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("1001_DFA_XYZ_XX.wav", r"unknown emotion code 'XYZ' in .*1001_DFA_XYZ_XX.wav'; expected one of \['ANG'"),
        ("1001_DFA_ANG_ZZ.wav", r"unknown level 'ZZ' in .*; expected one of \['HI', 'LO', 'MD', 'XX'\]"),
        ("1001_ABC_ANG_XX.wav", r"unknown sentence code 'ABC'"),
        ("1200_DFA_ANG_XX.wav", r"unknown actor '1200'.*expected 1001..1091"),
        ("1001-DFA-ANG-XX.wav", r"does not follow CREMA-D's pattern"),
    ],
)
def test_crema_d_bad_names_are_named(tmp_path: Path, template: Path, name: str, message: str) -> None:
    root = make_crema_d_tree(tmp_path / "CREMA-D", ["1001_DFA_ANG_XX.wav", name], template)
    with pytest.raises(CorpusError, match=message):
        parse("crema_d", root)


# ----------------------------------------------------------------------------- TESS


def test_tess_folders_spellings_words_and_order(tmp_path: Path, template: Path) -> None:
    root = make_tess_tree(tmp_path / "tess", template, words=2)
    manifest = parse("tess", root)
    assert len(manifest) == 2 * 7 * 2
    assert manifest.class_names == ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
    rows = [(Path(u.path).parent.name, Path(u.path).name, u.label, u.speaker) for u in manifest.utterances]
    assert rows[:4] == [
        ("OAF_angry", "OAF_waaa_angry.wav", "angry", "OAF"), ("OAF_angry", "OAF_waab_angry.wav", "angry", "OAF"),
        ("YAF_angry", "YAF_waaa_angry.wav", "angry", "YAF"), ("YAF_angry", "YAF_waab_angry.wav", "angry", "YAF"),
    ]
    folders = {Path(u.path).parent.name: u.label for u in manifest.utterances}
    assert folders["OAF_Fear"] == folders["YAF_fear"] == "fear"
    assert folders["OAF_Pleasant_surprise"] == folders["YAF_pleasant_surprised"] == "surprise"
    assert {u.text for u in manifest.utterances} == {"waaa", "waab"}


def test_complete_tess_copy_one_folder_down(tmp_path: Path, template: Path) -> None:
    """A complete copy inside an archive's wrapping folder: root may be the folder above."""
    make_tess_tree(tmp_path / "download" / "TESS Toronto emotional speech set data", template)
    (tmp_path / "download" / "README.txt").write_text("TESS")
    root = tmp_path / "download"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        manifest = get_corpus("tess").build_manifest(root)
    assert len(manifest) == 2800
    assert manifest.class_counts() == {name: 400 for name in manifest.class_names}
    assert Counter(manifest.speakers) == {"OAF": 1400, "YAF": 1400}
    assert len({u.text for u in manifest.utterances}) == 200
    summary = summarise(CorpusDataModule(corpus="tess", root=str(root), features={}))
    assert summary.complete and summary.num_utterances == 2800
    assert [(row.name, row.found, row.expected) for row in summary.speakers] == [("OAF", 1400, 1400), ("YAF", 1400, 1400)]


def test_tess_two_copies_and_mismatches_are_named(tmp_path: Path, template: Path) -> None:
    make_tess_tree(tmp_path / "two" / "a", template, words=1)
    make_tess_tree(tmp_path / "two" / "b", template, words=1)
    with pytest.raises(CorpusError, match="holds 2 copies of TESS"):
        parse("tess", tmp_path / "two")
    root = make_tess_tree(tmp_path / "one", template, words=1)
    (root / "OAF_angry" / "OAF_waaa_sad.wav").write_bytes(template.read_bytes())
    with pytest.raises(CorpusError, match=r"OAF_waaa_sad.wav' names emotion 'sad' but lies in OAF_angry"):
        parse("tess", root)


# ----------------------------------------------------------------------------- both


def test_recognised_and_built_from_their_configs(tmp_path: Path, template: Path) -> None:
    crema = make_crema_d_tree(tmp_path / "crema", ["1001_DFA_ANG_XX.wav"], template)
    tess = make_tess_tree(tmp_path / "tess", template, words=1)
    assert recognise(crema) == ["crema_d"] and recognise(tess) == ["tess"]
    for name, root in (("crema_d", crema), ("tess", tess)):
        cfg = compose_config([f"dataset={name}", f"dataset.root={root}"])
        from hydra.utils import instantiate

        datamodule = instantiate(cfg.dataset, _recursive_=False, _convert_="all")
        assert type(datamodule) is CorpusDataModule and datamodule.corpus.name == name
    # Pointed at the other corpus, the message says which corpus the folder looks like.
    with pytest.raises(CorpusError, match=r"looks like a TESS copy \(dataset=tess\)"):
        parse("crema_d", tess)


def test_cross_corpus_class_matching() -> None:
    crema, tess, emodb, iemocap = (get_corpus(n).class_names for n in ("crema_d", "tess", "emodb", "iemocap"))
    assert shared_classes("crema_d", crema, "tess", tess, None) == [
        "angry", "disgust", "fear", "happy", "neutral", "sad",
    ]
    assert shared_classes("tess", tess, "emodb", emodb, None) == [
        "angry", "disgust", "fear", "happy", "neutral", "sad",
    ]
    assert shared_classes("iemocap", iemocap, "crema_d", crema, None) == ["angry", "happy", "neutral", "sad"]
    # TESS's pleasant surprise meets the other corpora's surprise.
    assert "surprise" in shared_classes("tess", tess, "ravdess", get_corpus("ravdess").class_names, None)
