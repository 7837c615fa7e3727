"""Fold assignment: disjoint, covering, repeatable, and equal to the reference KFold."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import KFold

from ser.training.folds import make_folds


def test_kfold_test_folds_are_disjoint_and_cover_every_utterance() -> None:
    folds = make_folds("kfold", 535, 10, 46)
    assert len(folds) == 10
    tests = np.concatenate([test for _, test in folds])
    assert sorted(tests.tolist()) == list(range(535))
    for train, test in folds:
        assert not set(train) & set(test)
        assert len(train) + len(test) == 535


def test_kfold_repeats_for_a_seed_and_changes_with_it() -> None:
    first = make_folds("kfold", 100, 10, 7)
    again = make_folds("kfold", 100, 10, 7)
    other = make_folds("kfold", 100, 10, 8)
    assert all((a[1] == b[1]).all() for a, b in zip(first, again, strict=True))
    assert any((a[1] != b[1]).any() for a, b in zip(first, other, strict=True))


def test_kfold_equals_the_papers_splitter() -> None:
    ours = make_folds("kfold", 1200, 10, 32)
    reference = list(KFold(n_splits=10, shuffle=True, random_state=32).split(np.zeros(1200)))
    assert all((a[1] == b[1]).all() for a, b in zip(ours, reference, strict=True))


@pytest.mark.parametrize(
    ("strategy", "folds", "message"),
    [("kfold", 1000, "cv.folds=1000"), ("bogus", 10, "cv.strategy")],
)
def test_bad_cv_settings_name_the_setting(strategy: str, folds: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_folds(strategy, 100, folds, 0)
