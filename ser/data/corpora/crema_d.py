"""CREMA-D: 91 actors, 12 sentences, 6 emotions at up to four levels, in AudioWAV/."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

from ser.data.corpora.base import Corpus, CorpusError, register, subdirectories, wav_files
from ser.data.manifest import Utterance

AUDIO_FOLDER = "AudioWAV"


@register
class CremaD(Corpus):
    """CREMA-D: `<root>/AudioWAV/<actor>_<sentence>_<EMO>_<level>.wav`.

    Only `AudioWAV/` is read: the download's `AudioMP3/` copies of the same clips and its
    video folders are not counted. `dataset.root` may also be `AudioWAV` itself.
    """

    name = "crema_d"
    title = "CREMA-D"
    class_names = ("angry", "disgust", "fear", "happy", "neutral", "sad")
    emotions: ClassVar[dict[str, str]] = {
        "ANG": "angry", "DIS": "disgust", "FEA": "fear", "HAP": "happy", "NEU": "neutral", "SAD": "sad",
    }
    # LO, MD, HI: the intended intensity; XX: unspecified.
    levels: ClassVar[frozenset[str]] = frozenset({"LO", "MD", "HI", "XX"})
    sentences: ClassVar[tuple[str, ...]] = (
        "DFA", "IEO", "IOM", "ITH", "ITS", "IWL", "IWW", "MTI", "TAI", "TIE", "TSI", "WSI",
    )
    expected_counts = {name: (1087 if name == "neutral" else 1271) for name in class_names}
    speakers: ClassVar[tuple[str, ...]] = tuple(str(actor) for actor in range(1001, 1092))
    # Not a paper corpus: 4 s (docs/corpora.md), split seed 0.
    signal_length = 88200
    split_seed = 0
    pattern = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})\.wav$", re.IGNORECASE)

    def layout_hint(self) -> str:
        return "<root>/AudioWAV/<actor>_<sentence>_<EMO>_<level>.wav, e.g. AudioWAV/1001_DFA_ANG_XX.wav"

    @classmethod
    def audio_folder(cls, root: Path) -> Path | None:
        """`root/AudioWAV`, or root itself when it holds CREMA-D's WAVs directly."""
        for folder in (root / AUDIO_FOLDER, root):
            if folder.is_dir() and any(cls.pattern.match(p.name) for p in folder.iterdir()):
                return folder
        return None

    @classmethod
    def looks_like(cls, root: Path) -> bool:
        return cls.audio_folder(root) is not None

    def utterances(self, root: Path) -> Iterator[Utterance]:
        folder = root / AUDIO_FOLDER if (root / AUDIO_FOLDER).is_dir() else self.audio_folder(root)
        if folder is None:
            raise self.layout_error(root, f"no {AUDIO_FOLDER!r} folder inside {str(root)!r}")
        others = [d.name for d in subdirectories(folder.parent) if d != folder] if folder != root else []
        if others:
            self.excluded[f"folders besides {AUDIO_FOLDER} (not read: {', '.join(others)})"] += len(others)
        for path in wav_files(folder):
            match = self.pattern.match(path.name)
            if match is None:
                raise self.name_error(path, "does not follow CREMA-D's pattern")
            actor, sentence, emotion, level = (part.upper() for part in match.groups())
            label = self.emotion_for(emotion, self.emotions, path)
            if actor not in self.speakers:
                raise CorpusError(f"{self.name}: unknown actor {actor!r} in {str(path)!r}; expected 1001..1091")
            if sentence not in self.sentences:
                raise CorpusError(
                    f"{self.name}: unknown sentence code {sentence!r} in {str(path)!r}; expected one of "
                    f"{list(self.sentences)}"
                )
            if level not in self.levels:
                raise CorpusError(
                    f"{self.name}: unknown level {level!r} in {str(path)!r}; expected one of "
                    f"{sorted(self.levels)} (XX: unspecified)"
                )
            yield Utterance(str(path), label, actor, text=sentence)
