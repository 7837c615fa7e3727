"""The typed settings of the data groups, `dataset`, `features` and `cv`, and their schemas.

Each option of these groups (ser/conf/dataset/*.yaml, features/*.yaml, cv/*.yaml) names
its dataclass here first in its defaults list (`/schema/<group>@_here_: <name>`), so
Hydra checks the types of its values as the config is composed (`cv.folds=abc` is
refused there) and a key the option lacks is `???`. The values themselves, defaults
included, live in the YAML files alone; a field here says only what the setting is
and its range, which `Checked` checks when the engine builds the typed settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from ser.errors import ConfigError
from ser.settings.rules import (
    COUNT,
    MAX_SEED,
    NON_NEGATIVE_COUNT,
    OPTIONAL_COUNT,
    Checked,
    Number,
    SettingError,
    setting,
    usable_cores,
)

SCHEMA_GROUP = "schema"  # ConfigStore group of the schemas: schema/<config group>/<name>


@dataclass
class DatasetSettings(Checked):
    """What every dataset option has: its DataModule (`_target_`), corpus and loader."""

    _target_: str = MISSING
    corpus: str = MISSING
    features: Any = MISSING  # ${features}: the feature recipe
    # Samples per utterance at the features' rate; null: the corpus's (or the data's) own.
    signal_length: Optional[int] = setting(OPTIONAL_COUNT, MISSING)  # noqa: UP045 (OmegaConf 2.3)
    batch_size: int = setting(COUNT, MISSING)
    num_workers: int = setting(NON_NEGATIVE_COUNT, MISSING)

    def check(self) -> None:
        # Each loader worker is a process: more than the cores add nothing but processes
        # (a thousand hang the machine).
        if self.num_workers > usable_cores():
            raise SettingError(
                "num_workers", self.num_workers,
                f"at most {usable_cores()}, the CPU cores this process may use (each loader worker is a process)",
            )


@dataclass
class AudioDatasetSettings(DatasetSettings):
    """A dataset read from audio files, its features extracted and cached."""

    cache_dir: str = MISSING
    on_bad_file: str = MISSING
    feature_device: str = MISSING
    load_threads: Optional[int] = setting(OPTIONAL_COUNT, MISSING)  # noqa: UP045


@dataclass
class CorpusDatasetSettings(AudioDatasetSettings):
    """A named corpus in its own layout under `root` (ser.data.corpora)."""

    root: Optional[str] = MISSING  # noqa: UP045
    check_counts: bool = MISSING


@dataclass
class SyntheticDatasetSettings(CorpusDatasetSettings):
    """The generated corpus; `generator` is ser.data.synthetic.SyntheticCorpusSettings's."""

    generator: Any = MISSING


@dataclass
class LabelledDatasetSettings(AudioDatasetSettings):
    """A user's own corpus: its labels are the data's, ordered and renamed by settings."""

    classes: Optional[list[str]] = MISSING  # noqa: UP045
    label_map: Any = MISSING  # label -> class or null (Any: OmegaConf 2.3 cannot merge into a typed null)


@dataclass
class FolderDatasetSettings(LabelledDatasetSettings):
    """A user's corpus as one folder per label."""

    root: str = MISSING


@dataclass
class ManifestDatasetSettings(LabelledDatasetSettings):
    """A user's corpus listed in a CSV or JSONL manifest."""

    path: str = MISSING


@dataclass
class FeatureFileDatasetSettings(DatasetSettings):
    """The TIM-Net authors' MFCC files (dataset=timnet_npy)."""

    path: str = MISSING
    check_counts: bool = MISSING


@dataclass
class FeatureRecipe(Checked):
    """A `features` option: its kind names the recipe (ser.data.feature_kinds)."""

    kind: str = MISSING


@dataclass
class SpectralFeatures(FeatureRecipe):
    """MFCCs or log-Mel spectrograms (ser.data.features.FeatureSettings)."""

    sample_rate: int = setting(Number(whole=True, low=1000, high=384_000), MISSING)
    n_mfcc: int = setting(COUNT, MISSING)
    n_fft: int = setting(COUNT, MISSING)
    hop_length: int = setting(COUNT, MISSING)
    n_mels: int = setting(COUNT, MISSING)
    pad_mode: str = MISSING
    top_db: Optional[float] = setting(Number(low=0, nullable=True), MISSING)  # noqa: UP045


@dataclass
class SelfSupervisedFeatures(FeatureRecipe):
    """Frame features of a self-supervised model (ser.data.ssl_features.SSLFeatureSettings)."""

    model: str = MISSING
    layer: Any = MISSING  # a layer number or "mean"
    weights: Optional[str] = MISSING  # noqa: UP045
    download: bool = MISSING
    batch_size: int = setting(COUNT, MISSING)  # utterances per forward pass


SELECTIONS = ("last", "best_val_uar")
STACK_CHOICES = (False, True, "auto")


@dataclass
class CVSettings(Checked):
    """The folds of cross-validation (`cv`) and what each fold tests."""

    strategy: str = MISSING
    folds: Optional[int] = setting(Number(whole=True, low=2, nullable=True), MISSING)  # noqa: UP045
    # The split seed; null: the corpus's TIM-Net seed.
    seed: Optional[int] = setting(Number(whole=True, low=0, high=MAX_SEED, nullable=True), MISSING)  # noqa: UP045
    validation: Optional[float] = setting(  # noqa: UP045
        Number(low=0, high=1, low_open=True, high_open=True, nullable=True), MISSING
    )
    select: str = MISSING
    only_folds: Any = MISSING  # null, a fold number or a list (ser.training.gather)
    stack: Any = MISSING  # true, false or auto
    workers: Any = MISSING  # auto or a number >= 1 (ser.training.stacked.workers)
    # What a group of speaker folds is: cv=speaker's alone (SpeakerCVSettings).
    group_by: ClassVar[str | None] = None

    def check(self) -> None:
        if self.select not in SELECTIONS:
            raise ConfigError(f"cv.select must be one of {list(SELECTIONS)}, got {self.select!r}")
        if self.stack not in STACK_CHOICES or (self.stack != "auto" and not isinstance(self.stack, bool)):
            raise SettingError("stack", self.stack, "true, false or auto")
        workers = self.workers
        if workers != "auto" and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise SettingError("workers", workers, "auto or a whole number >= 1")

    def split_seed(self, corpus_seed: int) -> int:
        """`seed`, or the corpus's TIM-Net seed `corpus_seed` when it is null."""
        return int(self.seed if self.seed is not None else corpus_seed)


@dataclass
class SpeakerCVSettings(CVSettings):
    """Speaker-independent folds (cv=speaker): a group is a speaker or a session."""

    group_by: str = MISSING  # type: ignore[misc]


# schema/<group>/<name> -> its dataclass, as the YAML options name them.
SCHEMAS: dict[tuple[str, str], type] = {
    ("dataset", "corpus"): CorpusDatasetSettings,
    ("dataset", "synthetic"): SyntheticDatasetSettings,
    ("dataset", "folder"): FolderDatasetSettings,
    ("dataset", "manifest"): ManifestDatasetSettings,
    ("dataset", "feature_file"): FeatureFileDatasetSettings,
    ("features", "spectral"): SpectralFeatures,
    ("features", "ssl"): SelfSupervisedFeatures,
    ("cv", "folds"): CVSettings,
    ("cv", "speaker"): SpeakerCVSettings,
}


def register_schemas() -> None:
    """Put the schemas into Hydra's ConfigStore, where the group options find them."""
    store = ConfigStore.instance()
    for (group, name), node in SCHEMAS.items():
        store.store(group=f"{SCHEMA_GROUP}/{group}", name=name, node=node)
