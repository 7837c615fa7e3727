"""Berlin EMODB, and the generated synthetic corpus that reuses its layout."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import ClassVar

from ser.data.corpora.base import Corpus, register, wav_files
from ser.data.manifest import Utterance


@register
class EmoDB(Corpus):
    """Berlin EMODB: `<root>/wav/<speaker:2><text:3><emotion letter><version>.wav`."""

    name = "emodb"
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
                raise self.name_error(path, "does not follow EMODB's pattern")
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
