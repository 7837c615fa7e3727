"""SAVEE: speaker folders under AudioData/, or the same files flat."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

from ser.data.corpora.base import Corpus, CorpusError, register, subdirectories, wav_files
from ser.data.manifest import Utterance


@register
class Savee(Corpus):
    """SAVEE: `<root>/AudioData/<speaker>/<code><nn>.wav` or flat `<speaker>_<code><nn>.wav`.

    Both layouts give the same rows in the same order: rows are sorted on the flat name
    `<speaker>_<code><nn>.wav`, whichever layout the copy has.
    """

    name = "savee"
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
                        raise self.name_error(path, "is not <code><nn>.wav")
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
                raise self.name_error(path, "is not <speaker>_<code><nn>.wav")
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
