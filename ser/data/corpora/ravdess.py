"""RAVDESS speech: actor folders, seven numeric fields per file name."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

from ser.data.corpora.base import Corpus, CorpusError, register, subdirectories, visible
from ser.data.manifest import Utterance


@register
class Ravdess(Corpus):
    """RAVDESS speech: `<root>/Actor_<aa>/<MM>-<VV>-<EE>-<II>-<SS>-<RR>-<AA>.wav`.

    Only audio-only (modality 03) speech (vocal channel 01) files are used; song files
    (vocal channel 02) and audio-visual or video files are left out.
    """

    name = "ravdess"
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
            files = sorted(p for p in actor_dir.iterdir() if p.is_file() and visible(p))
            for path in files:
                match = self.pattern.match(path.stem)
                if match is None:
                    if path.suffix.lower() == ".wav":
                        raise self.name_error(path, "does not follow RAVDESS's pattern")
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
                    raise self.folder_error(path, f"actor {file_actor}", actor_dir.name)
                yield Utterance(str(path), label, actor, text=statement)
