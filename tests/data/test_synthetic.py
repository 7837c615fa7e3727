"""The generated EMODB-like corpus: determinism, layout, balance, marker reuse."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile

from ser.data.synthetic import (
    EMOTION_LETTERS,
    MARKER_NAME,
    SPEAKER_CODES,
    TEXT_CODES,
    SyntheticCorpusSettings,
    ensure_corpus,
    generate_corpus,
)
from ser.data.synthetic import corpus as synthetic

# Small enough to generate in a fraction of a second.
SMALL = SyntheticCorpusSettings(num_speakers=2, utterances_per_class_per_speaker=2, seconds=0.6)
EMODB_NAME = re.compile(r"^(\d\d)([a-z]\d\d)([WLEAFTN])([a-z])\.wav$")


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    first = generate_corpus(tmp_path / "a", SMALL)
    second = generate_corpus(tmp_path / "b", SMALL)
    assert [p.name for p in first] == [p.name for p in second]
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes()


def test_different_seed_gives_different_audio(tmp_path: Path) -> None:
    first = generate_corpus(tmp_path / "a", SMALL)
    other = SyntheticCorpusSettings(**{**SMALL.__dict__, "seed": 1})
    second = generate_corpus(tmp_path / "b", other)
    assert all(a.read_bytes() != b.read_bytes() for a, b in zip(first, second, strict=True))


def test_layout_follows_emodb(tmp_path: Path) -> None:
    paths = generate_corpus(tmp_path, SMALL)
    assert len(paths) == SMALL.num_utterances == 2 * 7 * 2
    assert all(p.parent == tmp_path / "wav" for p in paths)
    assert len({p.name for p in paths}) == len(paths)
    parts = [EMODB_NAME.match(p.name) for p in paths]
    assert all(parts), [p.name for p, m in zip(paths, parts, strict=True) if not m]
    assert {m.group(1) for m in parts} == set(SPEAKER_CODES[:2]) == {"03", "08"}
    assert {m.group(2) for m in parts} <= set(TEXT_CODES)
    letters = Counter(m.group(3) for m in parts)
    assert set(letters) == set("WLEAFTN") == set(EMOTION_LETTERS.values())
    assert set(letters.values()) == {4}  # balanced: speakers x utterances per class
    info = soundfile.info(str(paths[0]))
    assert (info.samplerate, info.channels, info.frames) == (16000, 1, 9600)
    assert info.subtype == "PCM_16"


def test_emodb_letters() -> None:
    # In EMODB file names A is fear (Angst), not anger.
    assert EMOTION_LETTERS == {
        "anger": "W",
        "boredom": "L",
        "disgust": "E",
        "fear": "A",
        "happiness": "F",
        "neutral": "N",
        "sadness": "T",
    }


def test_audio_is_speech_like_and_classes_differ(tmp_path: Path) -> None:
    settings = SyntheticCorpusSettings(num_speakers=2, utterances_per_class_per_speaker=3)
    level: dict[str, list[float]] = {}
    for path in generate_corpus(tmp_path, settings):
        audio, _ = soundfile.read(path)
        assert np.isfinite(audio).all() and 0.005 < np.abs(audio).max() < 1.0
        level.setdefault(path.name[5], []).append(float(np.sqrt(np.mean(audio**2))))
    mean = {letter: np.mean(values) for letter, values in level.items()}
    # Anger is acted loudest and sadness quietest.
    assert mean["W"] > mean["N"] > mean["T"]


def test_marker_records_the_settings(tmp_path: Path) -> None:
    ensure_corpus(tmp_path / "corpus", SMALL)
    marker = json.loads((tmp_path / "corpus" / MARKER_NAME).read_text())
    assert marker["settings"]["seed"] == SMALL.seed
    assert marker["settings"]["utterances_per_class_per_speaker"] == 2
    assert marker["generator_version"] == synthetic.GENERATOR_VERSION


def test_ensure_reuses_a_matching_corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "corpus"
    first = ensure_corpus(root, SMALL)
    assert len(first) == SMALL.num_utterances and all(p.is_file() for p in first)

    def fail(*args: object, **kwargs: object) -> list[Path]:
        raise AssertionError("regenerated a corpus whose marker matches")

    monkeypatch.setattr(synthetic, "generate_corpus", fail)
    assert ensure_corpus(root, SMALL) == first


def test_ensure_regenerates_when_settings_change(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    ensure_corpus(root, SMALL)
    old_bytes = (root / "wav" / "03a01Wa.wav").read_bytes()
    bigger = SyntheticCorpusSettings(**{**SMALL.__dict__, "utterances_per_class_per_speaker": 3})
    paths = ensure_corpus(root, bigger)
    assert len(paths) == bigger.num_utterances == len(list((root / "wav").iterdir()))
    assert (
        json.loads((root / MARKER_NAME).read_text())["settings"]["utterances_per_class_per_speaker"]
        == 3
    )
    # Same seed, same file name: same audio, as generation is per utterance.
    assert (root / "wav" / "03a01Wa.wav").read_bytes() == old_bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus"]  # no staging folder, no lock file


def test_ensure_regenerates_when_files_are_missing(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    paths = ensure_corpus(root, SMALL)
    paths[0].unlink()
    assert ensure_corpus(root, SMALL) == paths
    assert paths[0].is_file()


def test_ensure_never_leaves_a_half_written_corpus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "corpus"
    ensure_corpus(root, SMALL)
    marker = (root / MARKER_NAME).read_text()

    def crash(staging: Path, settings: SyntheticCorpusSettings) -> list[Path]:
        (Path(staging) / "wav").mkdir()
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "generate_corpus", crash)
    with pytest.raises(KeyboardInterrupt):
        ensure_corpus(root, SyntheticCorpusSettings(**{**SMALL.__dict__, "seed": 5}))
    assert (root / MARKER_NAME).read_text() == marker  # the old corpus is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus"]  # no staging folder, no lock file


def test_ensure_refuses_to_replace_foreign_data(tmp_path: Path) -> None:
    root = tmp_path / "my_emodb"
    (root / "wav").mkdir(parents=True)
    (root / "wav" / "03a01Wa.wav").write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="synthetic.json"):
        ensure_corpus(root, SMALL)
    assert (root / "wav" / "03a01Wa.wav").read_bytes() == b"precious"


def test_ensure_accepts_an_empty_directory(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    assert len(ensure_corpus(root, SMALL)) == SMALL.num_utterances


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"num_speakers": 11}, "num_speakers"),
        ({"utterances_per_class_per_speaker": 0}, "utterances_per_class_per_speaker"),
        ({"seconds": 0.1}, "seconds"),
        ({"sample_rate": 4000}, "sample_rate"),
        ({"variability": -1.0}, "variability"),
    ],
)
def test_invalid_settings_name_the_field(overrides: dict, named: str) -> None:
    with pytest.raises(ValueError, match=rf"SyntheticCorpusSettings\.{named}"):
        SyntheticCorpusSettings(**overrides)
