"""TESS: two speakers (OAF, YAF), 200 words in 7 emotions, one folder per speaker and emotion."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

from ser.data.corpora.base import Corpus, CorpusError, register, subdirectories, wav_files
from ser.data.manifest import Utterance


@register
class Tess(Corpus):
    """TESS: `<root>/<SPK>_<emotion>/<SPK>_<word>_<emotion>.wav`, SPK OAF or YAF.

    The folder names are spelt as in the real set, inconsistently (`OAF_Fear`,
    `OAF_Pleasant_surprise`, `YAF_pleasant_surprised`): folders are matched without
    case and with either spelling of pleasant surprise. In file names `ps` is pleasant
    surprise, named `surprise` here so that cross-corpus matching pairs it with the
    other corpora's surprise. `dataset.root` may be the folder holding the 14 folders or
    the one above it (an archive's wrapping folder).
    """

    name = "tess"
    class_names = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
    folder_emotions: ClassVar[dict[str, str]] = {
        "angry": "angry", "disgust": "disgust", "fear": "fear", "happy": "happy",
        "neutral": "neutral", "sad": "sad",
        "pleasant_surprise": "surprise", "pleasant_surprised": "surprise",
    }
    file_emotions: ClassVar[dict[str, str]] = {
        "angry": "angry", "disgust": "disgust", "fear": "fear", "happy": "happy",
        "neutral": "neutral", "sad": "sad", "ps": "surprise",
    }
    expected_counts = {name: 400 for name in class_names}
    speakers: ClassVar[tuple[str, ...]] = ("OAF", "YAF")
    expected_speaker_counts = {speaker: 1400 for speaker in speakers}
    # Not a paper corpus: 2.5 s (docs/corpora.md), split seed 0.
    signal_length = 55125
    split_seed = 0
    folder_pattern = re.compile(r"^(OAF|YAF)_(\w+)$", re.IGNORECASE)
    file_pattern = re.compile(r"^(OAF|YAF)_([a-z]+)_([a-z]+)\.wav$", re.IGNORECASE)

    def layout_hint(self) -> str:
        return "<root>/<OAF|YAF>_<emotion>/<SPK>_<word>_<emotion>.wav, e.g. OAF_Fear/OAF_back_fear.wav"

    @classmethod
    def speaker_folders(cls, root: Path) -> list[Path]:
        return [d for d in subdirectories(root) if cls.folder_pattern.match(d.name)]

    @classmethod
    def looks_like(cls, root: Path) -> bool:
        return bool(cls.speaker_folders(root))

    def corpus_folder(self, root: Path) -> Path:
        """`root` when it holds the speaker folders, else the one folder inside it that does."""
        if self.speaker_folders(root):
            return root
        inner = [d for d in subdirectories(root) if self.speaker_folders(d)]
        if len(inner) > 1:
            raise CorpusError(
                f"{self.name}: {str(root)!r} holds {len(inner)} copies of TESS "
                f"({', '.join(repr(d.name) for d in inner)}); set dataset.root to one of them"
            )
        if not inner:
            raise self.layout_error(root, f"no OAF_<emotion> or YAF_<emotion> folder in {str(root)!r}")
        return inner[0]

    def utterances(self, root: Path) -> Iterator[Utterance]:
        for folder in self.speaker_folders(self.corpus_folder(root)):
            speaker, emotion = self.folder_pattern.match(folder.name).groups()
            label = self.emotion_for(emotion.lower(), self.folder_emotions, folder, what="emotion folder")
            for path in wav_files(folder):
                match = self.file_pattern.match(path.name)
                if match is None:
                    raise self.name_error(path, "is not <SPK>_<word>_<emotion>.wav")
                file_speaker, word, code = match.groups()
                if self.emotion_for(code.lower(), self.file_emotions, path) != label:
                    raise self.folder_error(path, f"emotion {code!r}", folder.name)
                if file_speaker.upper() != speaker.upper():
                    raise self.folder_error(path, f"speaker {file_speaker}", folder.name)
                yield Utterance(str(path), label, speaker.upper(), text=word.lower())
