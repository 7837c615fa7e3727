"""Paired tests of a variant against the baseline over identical folds (sweep reports)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

# Differences smaller than this are ties (float32 rounding of the same fraction).
TIE_TOLERANCE = 1e-6


@dataclass(frozen=True)
class PairedTest:
    """Wilcoxon signed-rank and paired t-test of variant minus baseline over n pairs."""

    n: int
    mean_difference: float
    wilcoxon_statistic: float
    wilcoxon_p: float
    t_statistic: float
    ttest_p: float
    note: str = ""


def paired_tests(variant: Sequence[float], baseline: Sequence[float]) -> PairedTest:
    """Two-sided Wilcoxon signed-rank (scipy's exact test for small n) and paired t-test.

    Degenerate inputs give NaN with a note instead of an error or a misleading number:
    fewer than two pairs, all differences zero (no ranks; t undefined), or constant
    non-zero differences (t infinite). Zero differences are dropped by Wilcoxon.
    """
    a = np.asarray(variant, dtype=np.float64)
    b = np.asarray(baseline, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired samples must be 1-D of equal length, got {a.shape} and {b.shape}")
    differences = a - b
    # Scores are float32 fractions: differences below their rounding error are ties.
    differences[np.abs(differences) < TIE_TOLERANCE] = 0.0
    n = len(differences)
    nan = float("nan")
    mean = float(differences.mean()) if n else nan
    if n < 2:
        return PairedTest(n, mean, nan, nan, nan, nan, f"too few pairs (n={n}) for a test")
    if np.all(differences == 0):
        return PairedTest(n, mean, nan, nan, nan, nan, "all differences are zero: no test")
    notes = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        w = stats.wilcoxon(differences, alternative="two-sided")
        zeros = int(np.sum(differences == 0))
        if zeros:
            notes.append(f"Wilcoxon dropped {zeros} zero difference(s)")
        nonzero = n - zeros
        if nonzero < 6:
            notes.append(
                f"with {nonzero} non-zero pair(s) Wilcoxon p cannot go below {2 / 2**nonzero:.4g}"
            )
        if np.ptp(differences) < TIE_TOLERANCE:
            t_statistic, t_p = nan, nan
            notes.append("constant differences: t-test undefined")
        else:
            t = stats.ttest_rel(a, b)
            t_statistic, t_p = float(t.statistic), float(t.pvalue)
    return PairedTest(
        n, mean, float(w.statistic), float(w.pvalue), t_statistic, t_p, "; ".join(notes),
    )


# The level at which a corrected p-value marks a difference as significant.
SIGNIFICANCE_LEVEL = 0.05
CORRECTION = "Benjamini-Hochberg"


def benjamini_hochberg(p_values: Sequence[float]) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (scipy.stats.false_discovery_control), for a
    family of tests; NaN entries (no test) stay NaN and do not count in the family.

    Chosen over Holm because scipy offers it (Holm would be written by hand) and because a
    sweep report asks which of many variants differ, where controlling the share of false
    discoveries keeps more power than Holm's family-wise error rate.
    """
    values = np.asarray(p_values, dtype=np.float64)
    adjusted = np.full(values.shape, np.nan)
    tested = ~np.isnan(values)
    if tested.any():
        adjusted[tested] = stats.false_discovery_control(values[tested], method="bh")
    return adjusted
