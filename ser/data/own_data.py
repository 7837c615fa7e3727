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
from typing import Any

from ser.data.corpora.base import CorpusError
from ser.data.corpora.folder import FolderCorpus
from ser.data.corpora.manifest_file import ManifestCorpus
from ser.data.datamodule import CorpusDataModule


class ManifestDataModule(CorpusDataModule):
    """The rows of a CSV or JSONL manifest (ser.data.corpora.manifest_file)."""

    def __init__(
        self,
        path: str | None,
        corpus: str = "manifest",
        classes: Sequence[str] | None = None,
        label_map: Mapping[str, str | None] | None = None,
        **kwargs: Any,
    ) -> None:
        if path is None:
            raise CorpusError("dataset.path is not set: pass dataset.path=FILE.csv or FILE.jsonl")
        manifest = ManifestCorpus(path, name=corpus, classes=classes, label_map=label_map)
        # Paths are relative to the manifest's folder, which is the corpus root.
        super().__init__(corpus=manifest, root=str(manifest.path.parent), **kwargs)


class FolderDataModule(CorpusDataModule):
    """The audio files below `<root>/<label>/` (ser.data.corpora.folder)."""

    def __init__(
        self,
        root: str | None,
        corpus: str = "folder",
        classes: Sequence[str] | None = None,
        label_map: Mapping[str, str | None] | None = None,
        **kwargs: Any,
    ) -> None:
        if root is None:
            raise CorpusError("dataset.root is not set: pass dataset.root=DIR holding one folder per label")
        folder = FolderCorpus(name=corpus, classes=classes, label_map=label_map)
        super().__init__(corpus=folder, root=str(Path(root)), **kwargs)
