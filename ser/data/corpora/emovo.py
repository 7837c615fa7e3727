"""EMOVO: one folder per speaker, the emotion code first in each file name."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

from ser.data.corpora.base import Corpus, register, subdirectories, wav_files
from ser.data.manifest import Utterance


@register
class Emovo(Corpus):
    """EMOVO: `<root>/<speaker>/<emo>-<speaker>-<sentence>.wav`, speakers f1-f3, m1-m3."""

    name = "emovo"
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
                    raise self.name_error(path, "does not follow EMOVO's pattern")
                code, file_speaker, sentence = (part.lower() for part in match.groups())
                label = self.emotion_for(code, self.codes, path)
                if file_speaker != speaker:
                    raise self.folder_error(path, f"speaker {file_speaker!r}", f"the folder of speaker {speaker!r}")
                yield Utterance(str(path), label, speaker, text=sentence)
