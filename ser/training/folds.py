"""Fold assignment: the one place that decides which utterances test in which fold.

Strategies (`cv.strategy`):
- `kfold`: the papers' protocol, random folds over utterances (speaker-dependent).
- `speaker`: speaker-independent folds over speakers, or recording sessions where every
  row has one (IEMOCAP; `cv.group_by` chooses explicitly). `cv.folds=null`: one test fold
  per group (leave-one-group-out); `cv.folds=K`: the groups in natural order cut into K
  contiguous blocks (RAVDESS with `cv.folds=6`: actors 01-04, 05-08, ..., 21-24).
- `predefined`: the one fold a manifest's split column fixes (train, test, val rows).

`validation_split` carves a stratified validation set out of a training fold.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.model_selection import KFold, LeaveOneGroupOut, train_test_split

from ser.data.corpora import natural_key
from ser.data.manifest import Manifest
from ser.errors import ConfigError

Fold = tuple[np.ndarray, np.ndarray]

STRATEGIES = ("kfold", "speaker")
SPLITS = ("train", "val", "test")
GROUP_BY = ("auto", "speaker", "session")


def kfold_splits(num_utterances: int, folds: int, seed: int) -> list[Fold]:
    """The papers' protocol: `KFold(folds, shuffle=True, random_state=seed)` over rows.

    Rows must be in the reference order (class, then natural file name) for the splits
    to equal the published ones.
    """
    # At least 2 folds: the cv settings' range (ser.settings.data.CVSettings).
    if folds > num_utterances:
        raise ConfigError(
            f"cv.folds={folds} is more than the {num_utterances} utterances available"
        )
    splitter = KFold(n_splits=folds, shuffle=True, random_state=seed)
    rows = np.arange(num_utterances)
    return [(train, test) for train, test in splitter.split(rows)]


def speaker_groups(
    speakers: Sequence[str] | None,
    sessions: Sequence[str | None] | None = None,
    group_by: str = "auto",
) -> tuple[list[str], str]:
    """The group of each row for speaker-independent folds, and what the groups are.

    `auto` groups by session when every row has one (IEMOCAP), else by speaker.
    """
    if group_by not in GROUP_BY:
        raise ConfigError(f"cv.group_by must be one of {list(GROUP_BY)}, got {group_by!r}")
    has_sessions = sessions is not None and len(sessions) > 0 and all(
        s is not None and s != "" for s in sessions
    )
    if group_by == "session" or (group_by == "auto" and has_sessions):
        if not has_sessions:
            raise ConfigError(
                "cv.group_by=session, but the corpus's manifest has no session for every "
                "utterance; use cv.group_by=speaker"
            )
        assert sessions is not None
        return [str(s) for s in sessions], "session"
    if speakers is None or any(s is None or s == "" for s in speakers):
        raise ConfigError(
            "cv.strategy=speaker needs the speaker of every utterance, but the manifest "
            "lacks some; use cv.strategy=kfold"
        )
    return [str(s) for s in speakers], "speaker"


def speaker_splits(
    groups: Sequence[str], folds: int | None = None, kind: str = "speaker"
) -> list[Fold]:
    """Speaker-independent folds: one test fold per group, or per block of groups.

    `folds=None`: leave-one-group-out. `folds=K`: the groups in natural order cut into
    K contiguous blocks (sizes differ by at most one group); each block tests once.
    No group ever appears in both the training and the test rows of a fold.
    """
    groups = np.asarray(groups, dtype=object)
    unique = sorted(set(groups.tolist()), key=natural_key)
    if len(unique) < 2:
        found = f" (only {kind} {unique[0]!r})" if unique else ""
        raise ConfigError(
            f"cv.strategy=speaker needs at least 2 {kind}s to hold one out, but the "
            f"manifest has {len(unique)}{found}; use cv.strategy=kfold"
        )
    if folds is None:
        block_of = {group: i for i, group in enumerate(unique)}
    else:
        if folds > len(unique):
            raise ConfigError(
                f"cv.folds={folds} is more than the {len(unique)} {kind}s of the corpus "
                f"({', '.join(unique)}); use at most {len(unique)}, or cv.folds=null for "
                f"one fold per {kind}"
            )
        blocks = np.array_split(np.arange(len(unique)), folds)
        block_of = {unique[i]: b for b, members in enumerate(blocks) for i in members}
    block = np.array([block_of[g] for g in groups.tolist()])
    rows = np.zeros(len(block))
    return [(train, test) for train, test in LeaveOneGroupOut().split(rows, groups=block)]


def check_class_sizes(manifest: Manifest, folds: int) -> None:
    """Refuse a class with fewer utterances than folds (some folds would never test it),
    naming the rows, and the file they come from where the manifest knows it. Applied to
    the corpora whose layout asks for it (`Corpus.refuses_small_classes`: the user's own)."""
    for name in manifest.class_names:
        rows = [u for u in manifest.utterances if u.label == name]
        if len(rows) >= folds:
            continue
        origins = [u.origin for u in rows if u.origin]
        where = manifest.corpus
        if origins:
            file = origins[0].rsplit(" line ", 1)[0]
            where = f"{file} (lines {', '.join(o.rsplit(' line ', 1)[-1] for o in origins)})"
        raise ConfigError(
            f"{where}: class {name!r} has {len(rows)} utterance(s), fewer than the {folds} folds of "
            f"cv.folds={folds}; lower cv.folds, add utterances, or merge or drop the class with dataset.label_map"
        )


def predefined_split(splits: Sequence[str | None], origins: Sequence[str | None], corpus: str) -> Fold:
    """The one fold a split column fixes: (train rows, test rows); val rows are
    `predefined_validation`'s."""
    for split, origin in zip(splits, origins, strict=True):
        if split not in SPLITS:
            where = origin or corpus
            raise ConfigError(
                f"{where}: cv=predefined needs the split (train, val or test) of every utterance, "
                f"but this row has none; add a split column to the manifest or use cv=kfold"
            )
    labels = np.asarray(splits, dtype=object)
    train, test = np.flatnonzero(labels == "train"), np.flatnonzero(labels == "test")
    for name, rows in (("train", train), ("test", test)):
        if len(rows) == 0:
            raise ConfigError(f"{corpus}: cv=predefined, but no row has split={name}")
    return train, test


def predefined_validation(splits: Sequence[str | None]) -> np.ndarray | None:
    """The rows whose split is val (None: there are none)."""
    rows = np.flatnonzero(np.asarray(splits, dtype=object) == "val")
    return rows if len(rows) else None


def make_folds(
    strategy: str,
    num_utterances: int,
    folds: int | None,
    seed: int,
    speakers: Sequence[str] | None = None,
    sessions: Sequence[str | None] | None = None,
    group_by: str | None = "auto",
) -> list[Fold]:
    """Folds for `cv.strategy`; `kfold` is the papers' utterance-level protocol.

    `speaker` uses `speakers` (or `sessions`, see `speaker_groups`); `folds=None`
    means one fold per speaker or session. (`predefined` is `predefined_split`'s: it
    needs the rows' splits.)
    """
    if strategy == "kfold":
        if folds is None:
            raise ConfigError("cv.folds must be set for cv.strategy=kfold (null is for cv=speaker)")
        return kfold_splits(num_utterances, folds, seed)
    if strategy == "speaker":
        groups, kind = speaker_groups(speakers, sessions, group_by)
        if len(groups) != num_utterances:
            raise ConfigError(
                f"{len(groups)} speakers/sessions for {num_utterances} utterances; the "
                f"manifest is inconsistent"
            )
        return speaker_splits(groups, folds, kind)
    raise ConfigError(f"cv.strategy must be one of {list(STRATEGIES)}, got {strategy!r}")


def validation_split(
    train_rows: Sequence[int], labels: Sequence[int], fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Carve a stratified validation set out of a training fold: (train, validation).

    `labels` are the class indices of every manifest row; `fraction` of `train_rows`
    (rounded up) becomes validation, each class in proportion. Seeded by the split
    seed, so the same fold always gives the same validation rows. Test rows are never
    passed in, so they can never be chosen.
    """
    train_rows = np.asarray(train_rows, dtype=np.int64)
    strata = np.asarray(labels)[train_rows]
    try:
        train, validation = train_test_split(
            train_rows, test_size=float(fraction), random_state=seed, stratify=strata, shuffle=True,
        )
    except ValueError as error:
        raise ConfigError(
            f"cv.validation={fraction} cannot give a stratified validation set from "
            f"{len(train_rows)} training utterances of {len(set(strata.tolist()))} classes "
            f"({error}); raise cv.validation or use more data"
        ) from None
    return np.sort(train), np.sort(validation)
