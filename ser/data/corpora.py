"""Corpus layouts: how each corpus names its files, labels, speakers and counts.

Each corpus is a `Corpus` subclass registered under its config name. `build_manifest`
parses a downloaded copy exactly as shared/CORPORA.md describes and returns the rows in
the reference order (class, then natural file-name order), so the paper's folds can be
reproduced.

Errors are `CorpusError`s whose message names the path and what was expected; when a
tree looks like another corpus (EMODB pointed at a RAVDESS copy) the message says so.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

from ser.data.manifest import Manifest, Utterance


class CorpusError(ValueError):
    """A corpus directory that does not hold what its layout promises."""


def natural_key(text: str) -> list:
    """Sort key that orders 'a2' before 'a10' (natsort's default order for plain names)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


CORPORA: dict[str, type[Corpus]] = {}


def register(cls: type[Corpus]) -> type[Corpus]:
    CORPORA[cls.name] = cls
    return cls


def get_corpus(name: str) -> Corpus:
    """The corpus registered as `name`; unknown names list the known ones."""
    try:
        return CORPORA[name]()
    except KeyError:
        raise CorpusError(
            f"unknown corpus {name!r}; expected one of {sorted(CORPORA)}"
        ) from None


def _visible(path: Path) -> bool:
    # macOS archives carry `__MACOSX/` and `._name` resource forks next to the audio.
    return not path.name.startswith(".") and path.name != "__MACOSX"


def wav_files(directory: Path) -> list[Path]:
    """The visible `.wav` files (any case) directly inside `directory`, sorted by name."""
    return sorted(
        p for p in directory.iterdir()
        if p.is_file() and _visible(p) and p.suffix.lower() == ".wav"
    )


def subdirectories(directory: Path) -> list[Path]:
    """The visible folders directly inside `directory`, sorted by name."""
    return sorted(p for p in directory.iterdir() if p.is_dir() and _visible(p))


def recognise(root: str | Path) -> list[str]:
    """Names of the corpora whose layout `root` looks like (cheap checks, no full walk)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return [
        name for name, cls in CORPORA.items()
        if cls.detectable and cls.looks_like(root)
    ]


class Corpus:
    """A corpus layout. Subclasses set the class attributes and implement `utterances`."""

    name: ClassVar[str]
    # Name in messages and tables ("EMODB").
    title: ClassVar[str] = ""
    class_names: ClassVar[tuple[str, ...]]
    # Counts of a complete copy per class; None where the corpus size is not fixed.
    expected_counts: ClassVar[dict[str, int] | None] = None
    # Utterances per speaker of a complete copy, where CORPORA.md fixes them.
    expected_speaker_counts: ClassVar[dict[str, int] | None] = None
    # SPEC.md's per-corpus signal length (samples at 22 050 Hz) and TIM-Net's split seed.
    signal_length: ClassVar[int]
    split_seed: ClassVar[int]
    # Whether `recognise` reports this layout (the synthetic corpus reuses EMODB's).
    detectable: ClassVar[bool] = True

    def __init__(self) -> None:
        # Files or labels left out on purpose by the last parse, with the reason.
        self.excluded: Counter[str] = Counter()

    # -- what subclasses provide ----------------------------------------------------------
    def utterances(self, root: Path) -> Iterable[Utterance]:
        raise NotImplementedError

    def layout_hint(self) -> str:
        return "see shared/CORPORA.md"

    def emotion_for(
        self,
        code: str,
        table: Mapping[str, str],
        path: Path,
        what: str = "emotion code",
        order: Callable[[str], Any] | None = None,
    ) -> str:
        """The class name a file's emotion code stands for; unknown codes name the file."""
        try:
            return table[code]
        except KeyError:
            raise CorpusError(
                f"{self.name}: unknown {what} {code!r} in {str(path)!r}; "
                f"expected one of {sorted(table, key=order)}"
            ) from None

    @classmethod
    def looks_like(cls, root: Path) -> bool:
        """Whether `root` has this corpus's layout, judged from a few names."""
        return False

    def sort_name(self, utterance: Utterance) -> str:
        """The file name the reference sorted on (natural order within a class)."""
        return Path(utterance.path).name

    # -- shared behaviour -----------------------------------------------------------------
    @property
    def display_name(self) -> str:
        return self.title or self.name.upper()

    def layout_error(self, root: Path, problem: str) -> CorpusError:
        """A CorpusError naming the path, the expected layout and any recognised corpus."""
        message = f"{self.name}: {problem}; expected {self.display_name}'s layout {self.layout_hint()}"
        others = [name for name in recognise(root) if name != self.name]
        if others:
            message += (
                f". {str(root)!r} looks like a {CORPORA[others[0]]().display_name} copy "
                f"(dataset={others[0]})"
            )
        elif root.is_dir():
            # A common slip: dataset.root names the folder that holds the corpus folder.
            inner = [d for d in subdirectories(root)[:50] if self.looks_like(d)]
            if inner:
                message += f". {str(inner[0])!r} looks like the corpus: set dataset.root to it"
        return CorpusError(message)

    def build_manifest(self, root: str | Path, check_counts: bool = True) -> Manifest:
        """Parse `root`, order rows as the reference did, and check the counts."""
        root = Path(root).expanduser()
        if not root.is_dir():
            raise CorpusError(
                f"{self.name}: corpus directory {str(root)!r} does not exist or is not a "
                f"directory; set dataset.root to the folder you downloaded"
            )
        self.excluded = Counter()
        rows = list(self.utterances(root))
        if not rows:
            raise self.layout_error(root, f"found no utterances under {str(root)!r}")
        order = {name: i for i, name in enumerate(self.class_names)}
        rows.sort(
            key=lambda u: (
                order[u.label],
                natural_key(self.sort_name(u)),
                # Ties (CASIA's 201.wav exists once per speaker) by the path below root.
                natural_key(u.relative_to(root)),
            )
        )
        manifest = Manifest(self.name, str(root), list(self.class_names), rows)
        if check_counts:
            self.check_counts(manifest)
        return manifest

    def check_counts(self, manifest: Manifest) -> None:
        """Warn, per class, where a copy differs from a complete one."""
        if self.expected_counts is None:
            return
        found = manifest.class_counts()
        differences = [
            f"{name}: found {found.get(name, 0)}, expected {expected}"
            for name, expected in self.expected_counts.items()
            if found.get(name, 0) != expected
        ]
        if differences:
            warnings.warn(
                f"{self.name} at {manifest.root!r} looks partial ({len(manifest)} of "
                f"{sum(self.expected_counts.values())} utterances): " + "; ".join(differences),
                stacklevel=2,
            )


# ----------------------------------------------------------------------------- EMODB


@register
class EmoDB(Corpus):
    """Berlin EMODB: `<root>/wav/<speaker:2><text:3><emotion letter><version>.wav`."""

    name = "emodb"
    title = "EMODB"
    class_names = ("angry", "boredom", "disgust", "fear", "happy", "neutral", "sad")
    # In the file names A is fear (Angst), W is anger (Wut).
    letters: ClassVar[dict[str, str]] = {
        "W": "angry", "L": "boredom", "E": "disgust", "A": "fear",
        "F": "happy", "N": "neutral", "T": "sad",
    }
    expected_counts = {
        "angry": 127, "boredom": 81, "disgust": 46, "fear": 69,
        "happy": 71, "neutral": 79, "sad": 62,
    }
    speakers: ClassVar[tuple[str, ...]] = ("03", "08", "09", "10", "11", "12", "13", "14", "15", "16")
    signal_length = 96000
    split_seed = 46
    pattern = re.compile(r"^(\d\d)([a-z]\d\d)([A-Z])([a-z])\.(?i:wav)$")

    def layout_hint(self) -> str:
        return "<root>/wav/03a01Fa.wav: speaker, text code, emotion letter, version"

    @classmethod
    def looks_like(cls, root: Path) -> bool:
        wav_dir = root / "wav"
        return wav_dir.is_dir() and any(
            cls.pattern.match(p.name) for p in wav_dir.iterdir() if p.suffix.lower() == ".wav"
        )

    def utterances(self, root: Path) -> Iterable[Utterance]:
        wav_dir = root / "wav"
        if not wav_dir.is_dir():
            raise self.layout_error(root, f"no 'wav' folder inside {str(root)!r}")
        for path in wav_files(wav_dir):
            match = self.pattern.match(path.name)
            if match is None:
                raise CorpusError(
                    f"{self.name}: file name {str(path)!r} does not follow EMODB's pattern "
                    f"({self.layout_hint()})"
                )
            speaker, text, letter, _version = match.groups()
            label = self.emotion_for(letter, self.letters, path, what="emotion letter")
            yield Utterance(str(path), label, speaker, text=text)


@register
class Synthetic(EmoDB):
    """The generated default corpus: EMODB's layout and parsing, its own size."""

    name = "synthetic"
    title = "synthetic"
    expected_counts = None
    split_seed = 46
    detectable = False


# ----------------------------------------------------------------------------- CASIA


@register
class Casia(Corpus):
    """CASIA public subset: `<root>/<speaker>/<emotion>/<nnn>.wav`, files 201-250."""

    name = "casia"
    title = "CASIA"
    class_names = ("angry", "fear", "happy", "neutral", "sad", "surprise")
    expected_counts = {name: 200 for name in class_names}
    speakers: ClassVar[tuple[str, ...]] = ("liuchanhg", "wangzhe", "zhaoquanyin", "zhaozuoxiang")
    expected_speaker_counts = {speaker: 300 for speaker in speakers}
    signal_length = 88000
    split_seed = 32
    pattern = re.compile(r"^(\d+)\.wav$", re.IGNORECASE)

    def layout_hint(self) -> str:
        return (
            "<root>/<speaker>/<emotion>/<nnn>.wav, e.g. <root>/wangzhe/angry/201.wav, "
            f"with emotion folders {list(self.class_names)}"
        )

    @classmethod
    def looks_like(cls, root: Path) -> bool:
        for speaker_dir in subdirectories(root):
            if speaker_dir.name in cls.speakers:
                return True
            names = {d.name.lower() for d in subdirectories(speaker_dir)}
            if len(names & set(cls.class_names)) >= 2:
                return True
        return False

    def utterances(self, root: Path) -> Iterator[Utterance]:
        for speaker_dir in subdirectories(root):
            emotion_dirs = subdirectories(speaker_dir)
            if not emotion_dirs:
                if wav_files(speaker_dir):
                    raise self.layout_error(
                        root, f"found audio directly in {str(speaker_dir)!r}, not in emotion folders"
                    )
                continue
            for emotion_dir in emotion_dirs:
                label = emotion_dir.name.lower()
                if label not in self.class_names:
                    raise self.layout_error(
                        root, f"unknown emotion folder {str(emotion_dir)!r}"
                    )
                for path in wav_files(emotion_dir):
                    match = self.pattern.match(path.name)
                    if match is None:
                        raise CorpusError(
                            f"{self.name}: file name {str(path)!r} is not a sentence number "
                            f"like 201.wav ({self.layout_hint()})"
                        )
                    yield Utterance(str(path), label, speaker_dir.name, text=match.group(1))


# ----------------------------------------------------------------------------- EMOVO


@register
class Emovo(Corpus):
    """EMOVO: `<root>/<speaker>/<emo>-<speaker>-<sentence>.wav`, speakers f1-f3, m1-m3."""

    name = "emovo"
    title = "EMOVO"
    class_names = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
    codes: ClassVar[dict[str, str]] = {
        "dis": "disgust", "gio": "happy", "neu": "neutral", "pau": "fear",
        "rab": "angry", "sor": "surprise", "tri": "sad",
    }
    expected_counts = {name: 84 for name in class_names}
    speakers: ClassVar[tuple[str, ...]] = ("f1", "f2", "f3", "m1", "m2", "m3")
    expected_speaker_counts = {speaker: 98 for speaker in speakers}
    signal_length = 96000
    split_seed = 1
    pattern = re.compile(r"^([a-z]+)-([a-z]\d)-([a-z]+\d+)\.wav$", re.IGNORECASE)

    def layout_hint(self) -> str:
        return "<root>/<speaker>/<emo>-<speaker>-<sentence>.wav, e.g. <root>/f2/dis-f2-b2.wav"

    @classmethod
    def looks_like(cls, root: Path) -> bool:
        return any(d.name.lower() in cls.speakers for d in subdirectories(root))

    def utterances(self, root: Path) -> Iterator[Utterance]:
        speaker_dirs = [d for d in subdirectories(root) if d.name.lower() in self.speakers]
        if not speaker_dirs:
            raise self.layout_error(
                root, f"no speaker folder {list(self.speakers)} inside {str(root)!r}"
            )
        for speaker_dir in speaker_dirs:
            speaker = speaker_dir.name.lower()
            for path in wav_files(speaker_dir):
                match = self.pattern.match(path.name)
                if match is None:
                    raise CorpusError(
                        f"{self.name}: file name {str(path)!r} does not follow EMOVO's pattern "
                        f"({self.layout_hint()})"
                    )
                code, file_speaker, sentence = (part.lower() for part in match.groups())
                label = self.emotion_for(code, self.codes, path)
                if file_speaker != speaker:
                    raise CorpusError(
                        f"{self.name}: {str(path)!r} names speaker {file_speaker!r} but lies in "
                        f"the folder of speaker {speaker!r}"
                    )
                yield Utterance(str(path), label, speaker, text=sentence)


# ----------------------------------------------------------------------------- IEMOCAP


@register
class Iemocap(Corpus):
    """IEMOCAP, 4 classes: labels from EmoEvaluation files, audio under sentences/wav.

    Keeps ang, hap, exc, sad, neu with exc merged into happy. The speaker is the session
    plus the gender letter that starts the utterance id's last part: in
    `Ses01F_impro01_M013` the speaker is session 1's male actor (the `F` in `Ses01F`
    names the dialog's recording side, not the speaker).
    """

    name = "iemocap"
    title = "IEMOCAP"
    class_names = ("angry", "happy", "neutral", "sad")
    kept: ClassVar[dict[str, str]] = {
        "ang": "angry", "hap": "happy", "exc": "happy", "sad": "sad", "neu": "neutral",
    }
    # Every other label the evaluators used; these rows are left out, not errors.
    dropped: ClassVar[frozenset[str]] = frozenset(
        {"fru", "sur", "fea", "dis", "oth", "xxx"}
    )
    expected_counts = {"angry": 1103, "happy": 595 + 1041, "neutral": 1708, "sad": 1084}
    signal_length = 310000
    split_seed = 16
    sessions: ClassVar[tuple[str, ...]] = tuple(f"Session{n}" for n in range(1, 6))
    time_range = re.compile(r"^\[\s*\d+(?:\.\d*)?\s*-\s*\d+(?:\.\d*)?\s*\]$")
    utterance_id = re.compile(r"^Ses(\d\d)[FM]_\S+_([FM])\w*$")

    def layout_hint(self) -> str:
        return (
            "<root>/Session{1..5}/dialog/EmoEvaluation/*.txt with lines "
            "'[start - end]<TAB><utterance id><TAB><label><TAB>[V, A, D]', audio in "
            "<root>/Session{n}/sentences/wav/<dialog id>/<utterance id>.wav"
        )

    @classmethod
    def looks_like(cls, root: Path) -> bool:
        return any((root / session).is_dir() for session in cls.sessions)

    def utterances(self, root: Path) -> Iterator[Utterance]:
        sessions = [root / s for s in self.sessions if (root / s).is_dir()]
        if not sessions:
            raise self.layout_error(root, f"no Session1..Session5 folder inside {str(root)!r}")
        seen: dict[str, Path] = {}
        for session_dir in sessions:
            label_dir = session_dir / "dialog" / "EmoEvaluation"
            if not label_dir.is_dir():
                raise CorpusError(
                    f"{self.name}: label folder {str(label_dir)!r} is missing; expected the "
                    f"EmoEvaluation *.txt files of {session_dir.name} ({self.layout_hint()})"
                )
            label_files = sorted(
                p for p in label_dir.iterdir()
                if p.is_file() and _visible(p) and p.suffix == ".txt"
            )
            if not label_files:
                raise CorpusError(
                    f"{self.name}: no *.txt label file in {str(label_dir)!r} "
                    f"({self.layout_hint()})"
                )
            for label_file in label_files:
                for utterance_id, code, line in self._labelled(label_file):
                    yield from self._row(root, session_dir, label_file, line, utterance_id, code, seen)

    def _row(
        self, root: Path, session_dir: Path, label_file: Path, line: int, utterance_id: str,
        code: str, seen: dict[str, Path],
    ) -> Iterator[Utterance]:
        where = f"{str(label_file)!r} line {line}"
        match = self.utterance_id.match(utterance_id)
        if match is None:
            raise CorpusError(
                f"{self.name}: utterance id {utterance_id!r} at {where} is not of the form "
                f"Ses01F_impro01_F000"
            )
        session_number, gender = int(match.group(1)), match.group(2)
        session = f"Session{session_number}"
        if session != session_dir.name:
            raise CorpusError(
                f"{self.name}: utterance {utterance_id!r} at {where} belongs to {session}, "
                f"not {session_dir.name}"
            )
        if code not in self.kept:
            if code not in self.dropped:
                raise CorpusError(
                    f"{self.name}: unknown emotion label {code!r} for {utterance_id!r} at "
                    f"{where}; expected one of {sorted(self.kept.keys() | self.dropped)}"
                )
            self.excluded[f"label {code}"] += 1
            return
        if utterance_id in seen:
            raise CorpusError(
                f"{self.name}: utterance {utterance_id!r} is labelled twice, in "
                f"{str(seen[utterance_id])!r} and {where}"
            )
        seen[utterance_id] = label_file
        if code == "exc":
            self.excluded["exc merged into happy"] += 1
        dialog = utterance_id.rsplit("_", 1)[0]
        path = session_dir / "sentences" / "wav" / dialog / f"{utterance_id}.wav"
        yield Utterance(str(path), self.kept[code], f"{session}_{gender}", session=session)

    def _labelled(self, label_file: Path) -> Iterator[tuple[str, str, int]]:
        """(utterance id, label code, line number) of each utterance line of a label file."""
        try:
            handle = label_file.open(encoding="utf-8", errors="replace")
        except OSError as error:
            raise CorpusError(
                f"{self.name}: cannot read the label file {str(label_file)!r} ({error.strerror or error})"
            ) from error
        with handle:
            for number, raw in enumerate(handle, start=1):
                line = raw.rstrip("\r\n")
                if not line.startswith("["):
                    continue  # headers, blank lines and the evaluators' C-/A- lines
                parts = line.split("\t")
                if (
                    len(parts) < 4
                    or not self.time_range.match(parts[0].strip())
                    or not parts[3].strip().startswith("[")
                ):
                    raise CorpusError(
                        f"{self.name}: line {number} of {str(label_file)!r} is not of the form "
                        f"'[start - end]<TAB><utterance id><TAB><label><TAB>[V, A, D]': {line!r}"
                    )
                yield parts[1].strip(), parts[2].strip(), number


# ----------------------------------------------------------------------------- RAVDESS


@register
class Ravdess(Corpus):
    """RAVDESS speech: `<root>/Actor_<aa>/<MM>-<VV>-<EE>-<II>-<SS>-<RR>-<AA>.wav`.

    Only audio-only (modality 03) speech (vocal channel 01) files are used; song files
    (vocal channel 02) and audio-visual or video files are left out.
    """

    name = "ravdess"
    title = "RAVDESS"
    class_names = ("angry", "calm", "disgust", "fear", "happy", "neutral", "sad", "surprise")
    emotions: ClassVar[dict[str, str]] = {
        "01": "neutral", "02": "calm", "03": "happy", "04": "sad",
        "05": "angry", "06": "fear", "07": "disgust", "08": "surprise",
    }
    expected_counts = {name: (96 if name == "neutral" else 192) for name in class_names}
    expected_speaker_counts = {f"{actor:02d}": 60 for actor in range(1, 25)}
    signal_length = 110000
    split_seed = 46
    actor_dir = re.compile(r"^Actor_(\d\d)$")
    pattern = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")

    def layout_hint(self) -> str:
        return "<root>/Actor_<aa>/<MM>-<VV>-<EE>-<II>-<SS>-<RR>-<AA>.wav, e.g. Actor_01/03-01-05-01-01-01-01.wav"

    @classmethod
    def looks_like(cls, root: Path) -> bool:
        return any(cls.actor_dir.match(d.name) for d in subdirectories(root))

    def utterances(self, root: Path) -> Iterator[Utterance]:
        actor_dirs = [d for d in subdirectories(root) if self.actor_dir.match(d.name)]
        if not actor_dirs:
            raise self.layout_error(root, f"no Actor_01..Actor_24 folder inside {str(root)!r}")
        for actor_dir in actor_dirs:
            actor = self.actor_dir.match(actor_dir.name).group(1)
            files = sorted(p for p in actor_dir.iterdir() if p.is_file() and _visible(p))
            for path in files:
                match = self.pattern.match(path.stem)
                if match is None:
                    if path.suffix.lower() == ".wav":
                        raise CorpusError(
                            f"{self.name}: file name {str(path)!r} does not follow RAVDESS's "
                            f"pattern ({self.layout_hint()})"
                        )
                    continue  # notes or other non-audio files
                modality, channel, emotion, _intensity, statement, _rep, file_actor = match.groups()
                if path.suffix.lower() != ".wav" or modality != "03":
                    self.excluded["not audio-only (modality 01/02)"] += 1
                    continue
                if channel == "02":
                    self.excluded["song (vocal channel 02)"] += 1
                    continue
                if channel != "01":
                    raise CorpusError(
                        f"{self.name}: unknown vocal channel {channel!r} in {str(path)!r}; "
                        f"expected 01 (speech) or 02 (song)"
                    )
                label = self.emotion_for(emotion, self.emotions, path)
                if file_actor != actor:
                    raise CorpusError(
                        f"{self.name}: {str(path)!r} names actor {file_actor} but lies in "
                        f"{actor_dir.name}"
                    )
                yield Utterance(str(path), label, actor, text=statement)


# ----------------------------------------------------------------------------- SAVEE


@register
class Savee(Corpus):
    """SAVEE: `<root>/AudioData/<speaker>/<code><nn>.wav` or flat `<speaker>_<code><nn>.wav`.

    Both layouts give the same rows in the same order: rows are sorted on the flat name
    `<speaker>_<code><nn>.wav`, whichever layout the copy has.
    """

    name = "savee"
    title = "SAVEE"
    class_names = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
    # Two-letter codes first: "sa01" is sadness, not an unknown "s" code.
    codes: ClassVar[dict[str, str]] = {
        "sa": "sad", "su": "surprise", "a": "angry", "d": "disgust",
        "f": "fear", "h": "happy", "n": "neutral",
    }
    expected_counts = {name: (120 if name == "neutral" else 60) for name in class_names}
    speakers: ClassVar[tuple[str, ...]] = ("DC", "JE", "JK", "KL")
    expected_speaker_counts = {speaker: 120 for speaker in speakers}
    signal_length = 130000
    split_seed = 44
    code_pattern = re.compile(r"^([a-z]+?)(\d+)\.wav$", re.IGNORECASE)
    flat_pattern = re.compile(r"^([A-Za-z]{2})_([a-z]+?)(\d+)\.wav$", re.IGNORECASE)

    def layout_hint(self) -> str:
        return (
            "<root>/AudioData/<DC|JE|JK|KL>/<code><nn>.wav (e.g. AudioData/DC/sa01.wav) or "
            "flat <root>/<speaker>_<code><nn>.wav (e.g. DC_sa01.wav)"
        )

    @classmethod
    def looks_like(cls, root: Path) -> bool:
        if (root / "AudioData").is_dir():
            return True
        if any(d.name in cls.speakers for d in subdirectories(root)):
            return True
        return any(
            cls.flat_pattern.match(p.name) and p.name[:2].upper() in cls.speakers
            for p in root.iterdir()
        )

    def sort_name(self, utterance: Utterance) -> str:
        return f"{utterance.speaker}_{utterance.text}.wav"

    def utterances(self, root: Path) -> Iterator[Utterance]:
        audio_root = root / "AudioData" if (root / "AudioData").is_dir() else root
        speaker_dirs = [d for d in subdirectories(audio_root) if d.name.upper() in self.speakers]
        if speaker_dirs:
            for speaker_dir in speaker_dirs:
                for path in wav_files(speaker_dir):
                    match = self.code_pattern.match(path.name)
                    if match is None:
                        raise CorpusError(
                            f"{self.name}: file name {str(path)!r} is not <code><nn>.wav "
                            f"({self.layout_hint()})"
                        )
                    yield self._utterance(path, speaker_dir.name.upper(), *match.groups())
            return
        flat = wav_files(root)
        if not flat:
            raise self.layout_error(
                root, f"neither AudioData/<speaker> folders nor <speaker>_<code><nn>.wav files in {str(root)!r}"
            )
        for path in flat:
            match = self.flat_pattern.match(path.name)
            if match is None:
                raise CorpusError(
                    f"{self.name}: file name {str(path)!r} is not <speaker>_<code><nn>.wav "
                    f"({self.layout_hint()})"
                )
            speaker, code, number = match.groups()
            if speaker.upper() not in self.speakers:
                raise CorpusError(
                    f"{self.name}: unknown speaker {speaker!r} in {str(path)!r}; expected one "
                    f"of {list(self.speakers)}"
                )
            yield self._utterance(path, speaker.upper(), code, number)

    def _utterance(self, path: Path, speaker: str, code: str, number: str) -> Utterance:
        code = code.lower()
        label = self.emotion_for(code, self.codes, path, order=lambda c: (-len(c), c))
        # text keeps the code and number ("sa01"): the sentence list differs per emotion.
        return Utterance(str(path), label, speaker, text=f"{code}{number}")
