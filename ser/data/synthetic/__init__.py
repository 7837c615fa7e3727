"""The generated default corpus: a seeded, speech-like stand-in for EMODB in its layout.

`voice` synthesises one utterance of an acted emotion; `corpus` names the files, writes
them with their marker and reuses or replaces a corpus safely.
"""

from ser.data.synthetic.corpus import (
    EMOTION_LETTERS,
    GENERATOR_VERSION,
    MARKER_NAME,
    SPEAKER_CODES,
    TEXT_CODES,
    SyntheticCorpusSettings,
    ensure_corpus,
    generate_corpus,
    utterance_names,
)

__all__ = [
    "EMOTION_LETTERS", "GENERATOR_VERSION", "MARKER_NAME", "SPEAKER_CODES", "TEXT_CODES",
    "SyntheticCorpusSettings", "ensure_corpus", "generate_corpus", "utterance_names",
]
