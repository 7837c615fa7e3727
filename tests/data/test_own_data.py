"""Your own data: manifests (CSV, JSONL) and label folders, on generated clips.

Each test writes its corpus with exact per-class and per-speaker counts and checks what
the reader makes of it; the error messages are docs/bad_inputs.md's rows
(tests/test_bad_inputs_doc.py runs them).
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile
from hydra.utils import instantiate

from ser.data.corpora import CorpusError
from ser.data.own_data import FolderDataModule, ManifestDataModule
from ser.data.summary import summarise
from ser.training import folds
from tests.helpers.audio_files import write_wav
from tests.helpers.config import compose_config

# speaker -> label -> utterances; the counts every test checks against.
COUNTS = {"spk1": {"happy": 3, "sad": 2, "angry": 1}, "spk2": {"happy": 1, "sad": 4, "angry": 2}}


def corpus_rows(root: Path) -> list[dict[str, str]]:
    """Clips under root/audio/<speaker>/ and their manifest rows (paths relative to root)."""
    rows = []
    for speaker, labels in COUNTS.items():
        for label, count in labels.items():
            for i in range(count):
                relative = f"audio/{speaker}/{label}_{i}.wav"
                write_wav(root / relative, seconds=0.05 * (i + 1), seed=len(rows))
                rows.append({"path": relative, "label": label, "speaker": speaker, "session": f"s{speaker[-1]}",
                             "split": ("train", "val", "test")[len(rows) % 3], "notes": "ignored"})
    return rows


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def manifest_of(path: Path, **kwargs):
    module = ManifestDataModule(path=str(path), features={}, **kwargs)
    return module, module.build_manifest()


def test_csv_manifest_counts_order_and_columns(tmp_path: Path) -> None:
    rows = corpus_rows(tmp_path)
    (tmp_path / "lists").mkdir()
    # Paths are relative to the manifest's folder.
    module, manifest = manifest_of(
        write_csv(tmp_path / "lists" / "all.csv", [{**row, "path": "../" + row["path"]} for row in rows])
    )
    assert manifest.class_names == ["angry", "happy", "sad"]  # sorted label names
    assert manifest.class_counts() == {"angry": 3, "happy": 4, "sad": 6}
    assert Counter(manifest.speakers) == {"spk1": 6, "spk2": 7}
    assert Counter((u.speaker, u.label) for u in manifest.utterances) == {
        (speaker, label): n for speaker, labels in COUNTS.items() for label, n in labels.items()
    }
    # The file's order, absolute paths, sessions and splits; other columns ignored.
    assert [u.path for u in manifest.utterances] == [str((tmp_path / r["path"]).resolve()) for r in rows]
    assert [u.split for u in manifest.utterances] == [r["split"] for r in rows]
    assert {u.session for u in manifest.utterances} == {"s1", "s2"}
    assert manifest.utterances[2].origin == f"{tmp_path / 'lists' / 'all.csv'} line 4"
    assert module.corpus.name == "manifest" and module.corpus.split_seed == 0


def test_jsonl_manifest_gives_the_csv_rows(tmp_path: Path) -> None:
    rows = corpus_rows(tmp_path)
    _, from_csv = manifest_of(write_csv(tmp_path / "all.csv", rows))
    _, from_jsonl = manifest_of(write_jsonl(tmp_path / "all.jsonl", rows))
    fields = [(u.path, u.label, u.speaker, u.session, u.split) for u in from_csv.utterances]
    assert [(u.path, u.label, u.speaker, u.session, u.split) for u in from_jsonl.utterances] == fields


def test_classes_and_label_map(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "all.csv", corpus_rows(tmp_path))
    module, manifest = manifest_of(path, classes=["sad", "happy", "angry"])
    assert manifest.class_names == module.class_names == ["sad", "happy", "angry"]
    assert manifest.labels[:3] == [1, 1, 1]  # spk1's happy rows come first, class index 1
    # Merge angry into sad, rename happy to joy; a null drops a label's rows.
    module, merged = manifest_of(path, label_map={"angry": "sad", "happy": "joy"})
    assert merged.class_counts() == {"joy": 4, "sad": 9}
    assert dict(module.corpus.excluded) == {"label 'angry' renamed 'sad'": 3, "label 'happy' renamed 'joy'": 4}
    module, dropped = manifest_of(path, label_map={"angry": None})
    assert dropped.class_counts() == {"happy": 4, "sad": 6} and len(dropped) == 10
    assert dict(module.corpus.excluded) == {"label 'angry' dropped by dataset.label_map": 3}


def test_speaker_folds_and_the_predefined_split(tmp_path: Path) -> None:
    _, manifest = manifest_of(write_csv(tmp_path / "all.csv", corpus_rows(tmp_path)))
    groups, kind = folds.speaker_groups(manifest.speakers, None, "speaker")
    by_speaker = folds.speaker_splits(groups, None, kind)
    assert [sorted({manifest.speakers[i] for i in test}) for _, test in by_speaker] == [["spk1"], ["spk2"]]
    train, test = folds.predefined_split([u.split for u in manifest.utterances], [None] * len(manifest), "m")
    assert train.tolist() == [i for i in range(13) if i % 3 == 0] and test.tolist() == [i for i in range(13) if i % 3 == 2]
    assert folds.predefined_validation([u.split for u in manifest.utterances]).tolist() == [1, 4, 7, 10]


def test_signal_length_covers_95_percent(tmp_path: Path) -> None:
    rows = corpus_rows(tmp_path)
    module, manifest = manifest_of(write_csv(tmp_path / "all.csv", rows))
    seconds = [0.05 * (int(Path(r["path"]).stem.split("_")[1]) + 1) for r in rows]
    # One of the utterances' own lengths (never interpolated towards a longer one).
    covering = float(np.quantile(seconds, 0.95, method="inverted_cdf"))
    assert covering in seconds and sum(s <= covering for s in seconds) >= 0.95 * len(seconds)
    assert module.feature_settings.signal_length == round(covering * 22050)
    # A duration column is checked against the headers, which decide: rounded, it agrees;
    # in another unit it is refused, naming the row.
    stated = [{**r, "duration": f"{s:.2f}"} for r, s in zip(rows, seconds, strict=True)]
    module, _ = manifest_of(write_csv(tmp_path / "d.csv", stated))
    assert module.feature_settings.signal_length == round(covering * 22050)
    in_ms = [{**r, "duration": f"{1000 * s:g}"} for r, s in zip(rows, seconds, strict=True)]
    with pytest.raises(CorpusError, match=r"ms.csv line 2: duration 50 s, but .* lasts 0.05 s \(its header\)"):
        manifest_of(write_csv(tmp_path / "ms.csv", in_ms))
    # An explicit length wins.
    module, _ = manifest_of(tmp_path / "all.csv", signal_length=1000)
    assert module.feature_settings.signal_length == 1000


def test_class_with_fewer_utterances_than_folds_names_its_lines(tmp_path: Path) -> None:
    _, manifest = manifest_of(write_csv(tmp_path / "all.csv", corpus_rows(tmp_path)))
    folds.check_class_sizes(manifest, 3)
    with pytest.raises(ValueError, match=r"all.csv \(lines 7, 13, 14\): class 'angry' has 3 utterance\(s\), fewer than the 4 folds"):
        folds.check_class_sizes(manifest, 4)


def test_manifest_summary(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "all.csv", corpus_rows(tmp_path))
    summary = summarise(ManifestDataModule(path=str(path), features={}))
    assert [(r.name, r.found, r.expected) for r in summary.classes] == [("angry", 3, None), ("happy", 4, None), ("sad", 6, None)]
    assert [(r.name, r.found) for r in summary.speakers] == [("spk1", 6), ("spk2", 7)]
    assert summary.durations["max"] == pytest.approx(0.2) and summary.split_seed == 0


# ----------------------------------------------------------------------------- label folders


def make_label_folders(root: Path) -> dict[str, int]:
    """Nested clips in three formats, and litter that must be ignored and counted."""
    counts = {"calm": 0, "happy": 0, "sad": 0}
    for i, (label, relative, suffix) in enumerate([
        ("happy", "a", ".wav"), ("happy", "b/c", ".flac"), ("happy", "", ".OGG"), ("sad", "", ".wav"),
        ("sad", "x", ".wav"), ("calm", "", ".flac"),
    ]):
        path = root / label / relative / f"clip{i}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(str(path), 0.1 * np.random.default_rng(i).standard_normal(1600),
                        16000, format={".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG"}[suffix.lower()])
        counts[label] += 1
    (root / "happy" / ".DS_Store").write_bytes(b"\x00")
    (root / "happy" / "._clip0.wav").write_bytes(b"\x00")
    (root / ".hidden").mkdir()
    write_wav(root / ".hidden" / "clip.wav")
    write_wav(root / "__MACOSX" / "happy" / "clip0.wav")
    (root / "sad" / "transcript.txt").write_text("...")
    (root / "README.md").write_text("my corpus")
    write_wav(root / "loose.wav")
    return counts


def test_folder_reader_counts_and_ignored_files(tmp_path: Path) -> None:
    counts = make_label_folders(tmp_path / "mine")
    module = FolderDataModule(root=str(tmp_path / "mine"), features={})
    manifest = module.build_manifest()
    assert manifest.class_names == ["calm", "happy", "sad"] and manifest.class_counts() == counts
    # By class, then natural path order (not the file system's listing order).
    assert [Path(u.path).relative_to(tmp_path / "mine").as_posix() for u in manifest.utterances] == [
        "calm/clip5.flac", "happy/a/clip0.wav", "happy/b/c/clip1.flac", "happy/clip2.OGG",
        "sad/clip3.wav", "sad/x/clip4.wav",
    ]
    assert dict(module.corpus.excluded) == {
        "hidden files": 4, "non-audio files": 2, "files outside a label folder": 1,
    }
    summary = summarise(module)
    assert summary.excluded == dict(module.corpus.excluded) and summary.unreadable == []


def test_folder_reader_says_how_many_files_it_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    make_label_folders(tmp_path / "mine")
    with caplog.at_level("INFO"):
        FolderDataModule(root=str(tmp_path / "mine"), features={}).build_manifest()
    assert "6 audio files in label folders; ignored 1 files outside a label folder, 4 hidden files, 2 non-audio files" in caplog.text


@pytest.mark.parametrize("name", ["manifest", "folder"])
def test_dataset_configs_build_their_datamodules(name: str, tmp_path: Path) -> None:
    make_label_folders(tmp_path / "mine")
    rows = corpus_rows(tmp_path)
    where = f"dataset.path={write_csv(tmp_path / 'all.csv', rows)}" if name == "manifest" else f"dataset.root={tmp_path / 'mine'}"
    cfg = compose_config([f"dataset={name}", where, "dataset.classes=[sad,happy,calm]" if name == "folder" else "cv=predefined"])
    module = instantiate(cfg.dataset, _recursive_=False, _convert_="all")
    assert type(module) is {"manifest": ManifestDataModule, "folder": FolderDataModule}[name]
    manifest = module.build_manifest()
    assert module.corpus.name == name and len(manifest) == (13 if name == "manifest" else 6)
    if name == "folder":
        assert module.class_names == ["sad", "happy", "calm"]


@pytest.mark.parametrize(
    ("module", "setting", "message"),
    [(ManifestDataModule, "path", "dataset.path is not set: pass dataset.path=FILE.csv or FILE.jsonl"),
     (FolderDataModule, "root", "dataset.root is not set: pass dataset.root=DIR holding one folder per label")],
)
def test_the_data_location_must_be_set(module: type, setting: str, message: str) -> None:
    with pytest.raises(CorpusError, match=message):
        module(**{setting: None}, features={})


def test_empty_manifest_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text("path,label\n")
    with pytest.raises(CorpusError, match="empty.csv: no utterances"):
        manifest_of(tmp_path / "empty.csv")
