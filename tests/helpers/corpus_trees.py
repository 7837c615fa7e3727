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


def copy_wav(template: Path, path: Path) -> None:
    """Write the bytes of a tiny valid WAV at `path` (fast enough for thousands of files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(template.read_bytes())


CREMA_EMOTIONS = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")
CREMA_SENTENCES = ("IEO", "TIE", "IOM", "IWW", "TAI", "MTI", "IWL", "ITH", "DFA", "ITS", "TSI", "WSI")


def crema_d_names(actors: range = range(1001, 1092), complete: bool = True) -> list[str]:
    """CREMA-D-style names: per actor every sentence in every emotion at level XX, except
    IEO at LO, MD and HI for the five non-neutral emotions (82 per actor). `complete`:
    20 of them left out, as a real copy has 1271 clips per emotion and 1087 neutral."""
    names = []
    for actor in actors:
        for sentence in CREMA_SENTENCES:
            for emotion in CREMA_EMOTIONS:
                levels = ("LO", "MD", "HI") if sentence == "IEO" and emotion != "NEU" else ("XX",)
                names += [f"{actor}_{sentence}_{emotion}_{level}.wav" for level in levels]
    if complete:
        # 91 actors give 1274 per emotion and 1092 neutral: drop 3 and 5 from the last actors.
        dropped = {f"{1091 - i}_WSI_{emotion}_XX.wav" for emotion in CREMA_EMOTIONS
                   for i in range(5 if emotion == "NEU" else 3)}
        names = [name for name in names if name not in dropped]
    return names


def make_crema_d_tree(root: Path, names: list[str], template: Path) -> Path:
    """AudioWAV/ with `names`, beside the download's AudioMP3/ copies and video folders."""
    for name in names:
        copy_wav(template, root / "AudioWAV" / name)
    for folder, suffix in (("AudioMP3", ".mp3"), ("VideoFlash", ".flv"), ("VideoMp4", ".mp4")):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for name in names[:3]:
            (root / folder / name.replace(".wav", suffix)).write_bytes(b"\x00" * 16)
    (root / "AudioWAV" / ".DS_Store").write_bytes(b"\x00")
    return root


# The real set's folder names: spelling and case differ between the two speakers.
TESS_FOLDERS = {
    "OAF": ("OAF_angry", "OAF_disgust", "OAF_Fear", "OAF_happy", "OAF_neutral", "OAF_Pleasant_surprise", "OAF_Sad"),
    "YAF": ("YAF_angry", "YAF_disgust", "YAF_fear", "YAF_happy", "YAF_neutral", "YAF_pleasant_surprised", "YAF_sad"),
}
TESS_CODES = ("angry", "disgust", "fear", "happy", "neutral", "ps", "sad")


def tess_words(count: int) -> list[str]:
    """`count` distinct lower-case words (TESS's 200 words are letters only)."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["w" + letters[i // 26 // 26 % 26] + letters[i // 26 % 26] + letters[i % 26] for i in range(count)]


def make_tess_tree(root: Path, template: Path, words: int = 200) -> Path:
    """The 14 folders with `words` files each (200 in a complete copy)."""
    for speaker, folders in TESS_FOLDERS.items():
        for folder, code in zip(folders, TESS_CODES, strict=True):
            for word in tess_words(words):
                copy_wav(template, root / folder / f"{speaker}_{word}_{code}.wav")
    (root / "OAF_angry" / "._OAF_back_angry.wav").write_bytes(b"\x00")
    return root
