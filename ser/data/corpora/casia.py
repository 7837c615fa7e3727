"""CASIA's public subset: speaker folders holding emotion folders."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

from ser.data.corpora.base import Corpus, register, subdirectories, wav_files
from ser.data.manifest import Utterance


@register
class Casia(Corpus):
    """CASIA public subset: `<root>/<speaker>/<emotion>/<nnn>.wav`, files 201-250."""

    name = "casia"
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
                        raise self.name_error(path, "is not a sentence number like 201.wav")
                    yield Utterance(str(path), label, speaker_dir.name, text=match.group(1))
