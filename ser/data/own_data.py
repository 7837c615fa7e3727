"""DataModules of the user's own corpora: a manifest file (`dataset=manifest`) or a folder
per label (`dataset=folder`).

Both are `CorpusDataModule`s (features cached like any corpus's) whose corpus is built
from the settings instead of taken from the registry: `dataset.classes` fixes the class
order (else the sorted labels), `dataset.label_map` renames and merges labels (null
drops them), and `dataset.corpus` names the corpus in experiment names and results.
With `dataset.signal_length` null the length covers 95% of the utterances whole.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from ser.data.corpora.base import Corpus, CorpusError
from ser.data.corpora.folder import FolderCorpus
from ser.data.corpora.manifest_file import ManifestCorpus
from ser.data.datamodule import CorpusDataModule


class OwnCorpusDataModule(CorpusDataModule):
    """A CorpusDataModule whose corpus is built from where the user's data is (`location`,
    which the subclass's own setting names) and the corpus settings of the module doc."""

    # The one line when the data's location is not set.
    missing: ClassVar[str]

    def __init__(
        self,
        location: str | None,
        corpus: str,
        classes: Sequence[str] | None = None,
        label_map: Mapping[str, str | None] | None = None,
        **kwargs: Any,
    ) -> None:
        if location is None:
            raise CorpusError(self.missing)
        settings = {"name": corpus, "classes": classes, "label_map": label_map}
        built, root = self.build_corpus(location, settings)
        super().__init__(corpus=built, root=root, **kwargs)

    @staticmethod
    def build_corpus(location: str, settings: dict[str, Any]) -> tuple[Corpus, str]:
        """The corpus (`settings`: its name, classes and label map) and the root its paths
        are relative to."""
        raise NotImplementedError


class ManifestDataModule(OwnCorpusDataModule):
    """The rows of a CSV or JSONL manifest (ser.data.corpora.manifest_file)."""

    missing = "dataset.path is not set: pass dataset.path=FILE.csv or FILE.jsonl"

    def __init__(self, path: str | None, corpus: str = "manifest", **kwargs: Any) -> None:
        super().__init__(path, corpus, **kwargs)

    @staticmethod
    def build_corpus(location: str, settings: dict[str, Any]) -> tuple[Corpus, str]:
        manifest = ManifestCorpus(location, **settings)
        # Paths are relative to the manifest's folder, which is the corpus root.
        return manifest, str(manifest.path.parent)


class FolderDataModule(OwnCorpusDataModule):
    """The audio files below `<root>/<label>/` (ser.data.corpora.folder)."""

    missing = "dataset.root is not set: pass dataset.root=DIR holding one folder per label"

    def __init__(self, root: str | None, corpus: str = "folder", **kwargs: Any) -> None:
        super().__init__(root, corpus, **kwargs)

    @staticmethod
    def build_corpus(location: str, settings: dict[str, Any]) -> tuple[Corpus, str]:
        return FolderCorpus(**settings), str(Path(location))
