"""Tiny copies of each corpus in its exact layout, with generated WAVs (a few ms of noise).

Used by the corpus, bad-input and summary tests and by docs/bad_inputs.md's rows.
"""

from __future__ import annotations

from pathlib import Path

from tests.helpers.audio_files import write_wav

EMODB_COUNTS = {"W": 127, "L": 81, "E": 46, "A": 69, "F": 71, "N": 79, "T": 62}


def make_emodb_tree(root: Path, names: list[str]) -> Path:
    for i, name in enumerate(names):
        write_wav(root / "wav" / name, seed=i)
    return root


def full_emodb_names() -> list[str]:
    """535 distinct EMODB-style names with EMODB's per-class counts."""
    speakers = ("03", "08", "09", "10", "11", "12", "13", "14", "15", "16")
    texts = ("a01", "a02", "a04", "a05", "a07", "b01", "b02", "b03", "b09", "b10")
    names = []
    for letter, count in EMODB_COUNTS.items():
        for i in range(count):
            speaker, text = speakers[i % 10], texts[(i // 10) % 10]
            version = "abcd"[i // 100]
            names.append(f"{speaker}{text}{letter}{version}.wav")
    return names


def make_casia_tree(root: Path) -> Path:
    for speaker in ("wangzhe", "liuchanhg"):
        for emotion in ("angry", "fear", "happy", "neutral", "sad", "surprise"):
            for number in (202, 201, 210):
                write_wav(root / speaker / emotion / f"{number}.wav")
    # Archive litter that must be ignored.
    write_wav(root / "wangzhe" / "angry" / "._201.wav")
    write_wav(root / "__MACOSX" / "wangzhe" / "angry" / "201.wav")
    (root / "readme.txt").write_text("CASIA public subset")
    return root


def make_emovo_tree(root: Path) -> Path:
    for speaker in ("m2", "f1"):
        for code in ("dis", "gio", "neu", "pau", "rab", "sor", "tri"):
            for sentence in ("b2", "b1", "n10", "n2"):
                write_wav(root / speaker / f"{code}-{speaker}-{sentence}.wav")
    (root / "documents").mkdir()
    return root


IEMOCAP_HEADER = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"


def iemocap_block(start: float, end: float, utterance: str, label: str) -> str:
    """One utterance in the EmoEvaluation format, with the evaluators' lines after it."""
    return (
        f"[{start:.4f} - {end:.4f}]\t{utterance}\t{label}\t[2.5000, 3.0000, 2.5000]\n"
        "C-E1:\tNeutral;\t()\n"
        "C-E3:\tFrustration; Neutral;\t()\n"
        "A-E2:\tval 3; act 2; dom  2;\t()\n\n"
    )


# (session, dialog, utterance id, label) of the tiny IEMOCAP copy.
IEMOCAP_ROWS = [
    (1, "Ses01F_impro01", "Ses01F_impro01_F000", "neu"),
    (1, "Ses01F_impro01", "Ses01F_impro01_M013", "ang"),
    (1, "Ses01F_impro01", "Ses01F_impro01_F001", "fru"),
    (1, "Ses01F_impro01", "Ses01F_impro01_M002", "xxx"),
    (1, "Ses01F_impro01", "Ses01F_impro01_F010", "exc"),
    (1, "Ses01F_impro01", "Ses01F_impro01_F002", "hap"),
    (1, "Ses01M_script01_1", "Ses01M_script01_1_F005", "sad"),
    (1, "Ses01M_script01_1", "Ses01M_script01_1_M000", "sur"),
    (2, "Ses02M_impro03", "Ses02M_impro03_M001", "exc"),
    (2, "Ses02M_impro03", "Ses02M_impro03_F003", "neu"),
    (2, "Ses02M_impro03", "Ses02M_impro03_F004", "oth"),
]


def make_iemocap_tree(root: Path, rows: list[tuple[int, str, str, str]] = IEMOCAP_ROWS) -> Path:
    by_dialog: dict[tuple[int, str], list[tuple[str, str]]] = {}
    for session, dialog, utterance, label in rows:
        by_dialog.setdefault((session, dialog), []).append((utterance, label))
        write_wav(root / f"Session{session}" / "sentences" / "wav" / dialog / f"{utterance}.wav")
    for (session, dialog), items in by_dialog.items():
        label_dir = root / f"Session{session}" / "dialog" / "EmoEvaluation"
        label_dir.mkdir(parents=True, exist_ok=True)
        text = IEMOCAP_HEADER + "".join(
            iemocap_block(1.5 * i, 1.5 * i + 1.2, utterance, label)
            for i, (utterance, label) in enumerate(items)
        )
        (label_dir / f"{dialog}.txt").write_text(text)
        # Real copies also hold per-evaluator folders and macOS resource forks.
        (label_dir / "Categorical").mkdir(exist_ok=True)
        (label_dir / "Categorical" / f"{dialog}_e1_cat.txt").write_text(f"{items[0][0]} :Neutral; ()\n")
        (label_dir / f"._{dialog}.txt").write_bytes(b"\x00\x05\x16\x07")
    return root


def ravdess_name(emotion: str, actor: int, channel: str = "01", modality: str = "03",
                 intensity: str = "01", statement: str = "01", repetition: str = "01") -> str:
    return f"{modality}-{channel}-{emotion}-{intensity}-{statement}-{repetition}-{actor:02d}.wav"


def make_ravdess_tree(root: Path) -> Path:
    for actor in (2, 1):
        for emotion in ("01", "02", "03", "04", "05", "06", "07", "08"):
            for statement in ("02", "01"):
                write_wav(root / f"Actor_{actor:02d}" / ravdess_name(emotion, actor, statement=statement))
        # Song (vocal channel 02) and audio-visual/video-only files are left out.
        write_wav(root / f"Actor_{actor:02d}" / ravdess_name("03", actor, channel="02"))
        (root / f"Actor_{actor:02d}" / ravdess_name("03", actor, modality="01").replace(".wav", ".mp4")).write_bytes(b"")
        write_wav(root / f"Actor_{actor:02d}" / ravdess_name("05", actor, modality="02"))
    return root


SAVEE_CODES = ("a", "d", "f", "h", "n", "sa", "su")


def make_savee_tree(root: Path, flat: bool, numbers: tuple[int, ...] = (1, 2, 10)) -> Path:
    for speaker in ("JK", "DC"):
        for code in SAVEE_CODES:
            for number in numbers:
                name = f"{code}{number:02d}.wav"
                path = root / f"{speaker}_{name}" if flat else root / "AudioData" / speaker / name
                write_wav(path)
    if not flat:
        (root / "AudioData" / "Info.txt").write_text("SAVEE")
    return root
