"""sweep.py report: paired tests on numbers with known answers, and the table of
constructed results.json files (no training here; tests/sweeps/test_sweeps.py runs real sweeps)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import pytest
from scipy import stats

from ser.sweeps.report import PAPER_BASELINE, write_report
from ser.sweeps.report.collect import METRICS, build_report, is_aggregated, override_key
from ser.sweeps.report.render import significant
from ser.sweeps.report.statistics import benjamini_hochberg, paired_tests

# --------------------------------------------------------------------------- statistics


def test_wilcoxon_is_exact_for_six_positive_differences() -> None:
    # All six differences positive: the signed-rank statistic is 0, and of the 2**6
    # equally likely sign patterns only "all +" and "all -" are as extreme.
    test = paired_tests([2, 3, 4, 5, 6, 7], [1, 1, 1, 1, 1, 1])
    assert test.n == 6
    assert test.wilcoxon_statistic == 0
    assert test.wilcoxon_p == pytest.approx(2 / 2**6, abs=1e-12)
    assert test.wilcoxon_p == pytest.approx(0.03125, abs=1e-12)


def test_paired_t_test_matches_the_hand_computed_value() -> None:
    # Differences 1..6: mean 3.5, sample variance 3.5, so t = 3.5 / sqrt(3.5 / 6) = sqrt(21)
    # with 5 degrees of freedom. For odd df the t distribution has a closed form:
    # P(|T| < t) = 2/pi * (theta + sin cos (1 + 2/3 cos^2)), theta = atan(t / sqrt(5)).
    test = paired_tests([2, 4, 6, 8, 10, 12], [1, 2, 3, 4, 5, 6])
    t = math.sqrt(21)
    theta = math.atan(t / math.sqrt(5))
    inside = 2 / math.pi * (theta + math.sin(theta) * math.cos(theta) * (1 + 2 / 3 * math.cos(theta) ** 2))
    assert test.mean_difference == pytest.approx(3.5)
    assert test.t_statistic == pytest.approx(t, rel=1e-12)
    assert test.ttest_p == pytest.approx(1 - inside, rel=1e-9)
    assert test.ttest_p == pytest.approx(0.0059335, abs=1e-7)


def test_the_sign_of_the_difference_is_row_minus_baseline() -> None:
    test = paired_tests([1, 1, 1, 1, 1, 1], [2, 3, 4, 5, 6, 7])
    assert test.mean_difference == pytest.approx(-3.5)
    assert test.t_statistic < 0
    assert test.wilcoxon_p == pytest.approx(0.03125)


@pytest.mark.parametrize(
    ("variant", "baseline", "note"),
    [
        ([], [], "too few pairs (n=0)"),
        ([0.5], [0.4], "too few pairs (n=1)"),
        ([0.5, 0.6, 0.7], [0.5, 0.6, 0.7], "all differences are zero"),
        # float32 rounding of the same fraction is a tie, not a difference
        ([0.1428571492433548, 0.5], [0.1428571455180645, 0.5], "all differences are zero"),
    ],
)
def test_degenerate_pairs_give_nan_and_a_note(variant: list[float], baseline: list[float], note: str) -> None:
    test = paired_tests(variant, baseline)
    assert math.isnan(test.wilcoxon_p) and math.isnan(test.ttest_p)
    assert note in test.note


def test_constant_differences_leave_the_t_test_undefined_but_not_wilcoxon() -> None:
    test = paired_tests([2, 3, 4, 5, 6, 7], [1, 2, 3, 4, 5, 6])
    assert math.isnan(test.ttest_p)
    assert "t-test undefined" in test.note
    assert test.wilcoxon_p == pytest.approx(0.03125)


def test_zero_differences_are_dropped_by_wilcoxon_with_a_note() -> None:
    test = paired_tests([1, 2, 3, 4, 5, 6, 7], [0, 1, 2, 3, 4, 5, 7])
    assert test.n == 7
    assert "dropped 1 zero" in test.note
    assert "cannot go below" not in test.note  # six non-zero pairs
    assert test.wilcoxon_p == pytest.approx(0.03125)


def test_unequal_samples_are_refused() -> None:
    with pytest.raises(ValueError, match="equal length"):
        paired_tests([1, 2], [1])


# --------------------------------------------------------------------------- the table


def write_results(
    path: Path,
    *,
    corpus: str,
    uars: list[float],
    wars: list[float] | None = None,
    training_seed: int = 1234,
    split_seed: int = 42,
    overrides: list[str] | None = None,
    choices: dict[str, Any] | None = None,
    num_blocks: int = 10,
    se: bool = True,
    variant: str = "mssenet-paper-se_on-spatial_dropout-tab10-mfcc",
    status: str = "complete",
    test_rows: list[list[int]] | None = None,
    config: dict[str, Any] | None = None,
) -> None:
    wars = wars if wars is not None else uars
    folds = [
        {"fold": k, "test/uar": u, "test/war": w, "num_test": 10,
         "test_rows": test_rows[k] if test_rows else [k]}
        for k, (u, w) in enumerate(zip(uars, wars, strict=True))
    ]
    record = {
        "status": status, "corpus": corpus, "variant": variant,
        "seeds": {"training": training_seed, "split": split_seed},
        "hydra": {"choices": choices or {}, "overrides": overrides or [], "job_num": 0},
        "config": {
            "seed": training_seed,
            "variant": variant[: -len("-mfcc")],
            "model": {"net": {"_target_": "ser.models.MSSENet", "num_blocks": num_blocks,
                              "squeeze_excitation": se}},
            "fusion": {"kernels": {"name": "paper"}, "se": {"name": "on" if se else "off", "enabled": se}},
            "features": {"kind": "mfcc"},
            **(config or {}),
        },
        "folds": folds,
    }
    path.mkdir(parents=True, exist_ok=True)
    (path / "results.json").write_text(json.dumps(record))


def se_sweep(root: Path) -> None:
    """SE on (baseline) vs off on two corpora, two training seeds each, three folds."""
    scores = {
        # (se, corpus, seed): fold UARs
        ("on", "emodb", 1): [0.50, 0.60, 0.70],
        ("on", "emodb", 2): [0.52, 0.62, 0.72],
        ("off", "emodb", 1): [0.40, 0.55, 0.60],
        ("off", "emodb", 2): [0.44, 0.57, 0.62],
        ("on", "casia", 1): [0.30, 0.35, 0.40],
        ("on", "casia", 2): [0.30, 0.35, 0.40],
        ("off", "casia", 1): [0.31, 0.35, 0.38],
        ("off", "casia", 2): [0.31, 0.35, 0.38],
    }
    for job, ((se, corpus, seed), uars) in enumerate(scores.items()):
        write_results(
            root / str(job), corpus=corpus, uars=uars, training_seed=seed,
            overrides=[f"model/se={se}", f"dataset={corpus}", f"seed={seed}", "cv.folds=3"],
            choices={"model": "mssenet", "model/se": se, "dataset": corpus},
            se=se == "on",
            variant=f"mssenet-paper-se_{se}-spatial_dropout-tab10-mfcc",
        )


def test_rows_are_variants_columns_corpora_and_cells_pool_folds_and_seeds(tmp_path: Path) -> None:
    se_sweep(tmp_path)
    built = build_report(tmp_path, PAPER_BASELINE)
    assert [row.label for row in built.rows] == ["model/se=on", "model/se=off"]
    assert built.baseline == "model/se=on"  # the paper's MS-SENet, found by its settings
    assert built.corpora == ["emodb", "casia"]
    cell = built.rows[0].cells["emodb"]
    values = [0.50, 0.60, 0.70, 0.52, 0.62, 0.72]
    mean = sum(values) / 6
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / 5)
    assert cell.summary("test/uar") == pytest.approx((mean, std))
    assert len(cell.runs) == 2


def test_pairs_are_identical_folds_with_seeds_averaged(tmp_path: Path) -> None:
    se_sweep(tmp_path)
    built = build_report(tmp_path, PAPER_BASELINE)
    # emodb: per fold, mean over the two seeds of (off) and (on)
    off = [0.42, 0.56, 0.61]
    on = [0.51, 0.61, 0.71]
    expected = paired_tests(off, on)
    test = built.tests[("model/se=off", "emodb", "test/uar")]
    assert test.n == 3
    assert test.mean_difference == pytest.approx(expected.mean_difference)
    assert test.ttest_p == pytest.approx(expected.ttest_p)
    assert test.wilcoxon_p == pytest.approx(expected.wilcoxon_p)
    # Both corpora pooled: six pairs
    pooled = built.tests[("model/se=off", "all", "test/uar")]
    assert pooled.n == 6


def test_outputs_are_written_and_logged_to_wandb_offline(tmp_path: Path) -> None:
    se_sweep(tmp_path)
    write_report(tmp_path, PAPER_BASELINE, wandb_project="ser", wandb_mode="offline")
    text = (tmp_path / "report.md").read_text()
    assert "| model/se=on (baseline) |" in text
    assert "## Paired tests against the baseline: UAR" in text
    with open(tmp_path / "report.csv") as stream:
        rows = list(csv.DictReader(stream))
    assert [(r["row"], r["corpus"]) for r in rows] == [
        ("model/se=on", "emodb"), ("model/se=on", "casia"), ("model/se=on", "all"),
        ("model/se=off", "emodb"), ("model/se=off", "casia"), ("model/se=off", "all"),
    ]
    assert float(rows[0]["test/uar_mean"]) == pytest.approx(0.61)
    assert rows[3]["pairs"] == "3"
    assert (tmp_path / "report.png").stat().st_size > 1000
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    # The W&B run is finished: a later report starts a new one.
    write_report(tmp_path, PAPER_BASELINE, wandb_project="ser", wandb_mode="offline")
    assert len(list((tmp_path / "wandb").glob("offline-run-*"))) == 2


def test_baseline_by_label_conditions_and_failures(tmp_path: Path) -> None:
    se_sweep(tmp_path)
    assert build_report(tmp_path, "model/se=off").baseline == "model/se=off"
    assert build_report(tmp_path, "mssenet-paper-se_off-spatial_dropout-tab10-mfcc").baseline == "model/se=off"
    assert build_report(tmp_path, "model.net.squeeze_excitation=false").baseline == "model/se=off"
    ambiguous = build_report(tmp_path, "model=mssenet")
    assert ambiguous.baseline is None and not ambiguous.tests
    assert any("several rows" in note for note in ambiguous.notes)
    missing = build_report(tmp_path, "model.net.num_blocks=8")
    assert missing.baseline is None
    assert any("no row has model.net.num_blocks=8" in note for note in missing.notes)


def test_a_sweep_of_named_points_is_labelled_by_the_names(tmp_path: Path) -> None:
    """hydra/sweeper=points (sweep=ablation) adds `+ablation=<point>` to each job's own
    overrides: the point's name alone tells the rows apart, so it is the row."""
    groups = {"model": "mssenet", "model/kernels": "paper", "model/se": "on"}
    points = {
        "baseline": ([], {}, 10),
        "square_kernels": (["model/kernels=square"], {"model/kernels": "square"}, 10),
        "no_se": (["model/se=off"], {"model/se": "off"}, 10),
        "tabs_8": (["model.net.num_blocks=8"], {}, 8),
        "timnet": (["model=timnet"], {"model": "timnet"}, 8),
    }
    for job, (name, (overrides, choices, blocks)) in enumerate(points.items()):
        write_results(
            tmp_path / str(job), corpus="emodb", uars=[0.5 + job / 100, 0.6], num_blocks=blocks,
            overrides=["+sweep=ablation", "dataset=emodb", f"+ablation={name}", *overrides],
            choices={**groups, **choices, "dataset": "emodb"}, config={"ablation": name},
            variant=f"mssenet-paper-se_on-spatial_dropout-tab{blocks}-mfcc" if name != "timnet" else "timnet-tab8-mfcc",
        )
    built = build_report(tmp_path, "ablation=baseline")
    assert [row.label for row in built.rows] == [f"ablation={name}" for name in points]
    assert built.baseline == "ablation=baseline"
    assert ("ablation=timnet", "emodb", "test/uar") in built.tests


def test_runs_that_vary_only_in_seed_and_corpus_make_one_row(tmp_path: Path) -> None:
    for job, (corpus, seed) in enumerate([("emodb", 1), ("emodb", 2), ("casia", 1)]):
        write_results(tmp_path / str(job), corpus=corpus, uars=[0.5, 0.6], training_seed=seed,
                      overrides=[f"dataset={corpus}", f"seed={seed}"], choices={"dataset": corpus})
    built = build_report(tmp_path, PAPER_BASELINE)
    assert [row.label for row in built.rows] == ["mssenet-paper-se_on-spatial_dropout-tab10-mfcc"]
    assert built.baseline == built.rows[0].label
    assert not built.tests  # nothing to compare with


def test_incomplete_foreign_and_duplicate_results_are_left_out_with_notes(tmp_path: Path) -> None:
    write_results(tmp_path / "0", corpus="emodb", uars=[0.5, 0.6])
    write_results(tmp_path / "1", corpus="emodb", uars=[0.9, 0.9], status="running")
    write_results(tmp_path / "2", corpus="emodb", uars=[0.1, 0.1])  # same row, corpus and seeds
    (tmp_path / "3").mkdir()
    (tmp_path / "3" / "results.json").write_text('{"something": "else"}')
    built = build_report(tmp_path, PAPER_BASELINE)
    assert built.num_runs == 1
    assert built.rows[0].cells["emodb"].summary("test/uar")[0] == pytest.approx(0.55)
    notes = "\n".join(built.notes)
    assert "status 'running'" in notes
    assert "not a cross-validation results file" in notes
    assert "the same row, corpus and seeds" in notes


def test_folds_with_different_test_utterances_are_not_paired(tmp_path: Path) -> None:
    write_results(tmp_path / "0", corpus="emodb", uars=[0.5, 0.6, 0.7], overrides=["model/se=on"],
                  choices={"model/se": "on"}, test_rows=[[0], [1], [2]])
    write_results(tmp_path / "1", corpus="emodb", uars=[0.4, 0.5, 0.6], overrides=["model/se=off"],
                  choices={"model/se": "off"}, se=False, test_rows=[[0], [1], [9]])
    built = build_report(tmp_path, "model/se=on")
    test = built.tests[("model/se=off", "emodb", "test/uar")]
    assert test.n == 2
    assert "1 fold(s) left out: different test utterances" in test.note


def test_report_of_an_empty_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no complete results.json"):
        write_report(tmp_path, wandb_project=None)
    with pytest.raises(FileNotFoundError):
        write_report(tmp_path / "missing", wandb_project=None)


def test_row_labels_ignore_where_and_how_settings() -> None:
    assert is_aggregated("paths.data_dir")
    assert is_aggregated("hydra/launcher")
    assert is_aggregated("dataset.root")
    assert is_aggregated("seed")
    assert not is_aggregated("model/se")
    assert not is_aggregated("dataset.signal_length")
    assert override_key("+ablation=no_se") == "ablation"
    assert override_key("~callbacks.checkpoint") == "callbacks.checkpoint"


def test_significant_differences_are_marked_with_the_correction_stated(tmp_path: Path) -> None:
    # Eight folds: SE off is clearly worse on emodb (every fold), and no different on casia.
    emodb_on = [0.60, 0.62, 0.64, 0.66, 0.68, 0.70, 0.72, 0.74]
    emodb_off = [u - 0.10 - 0.01 * k for k, u in enumerate(emodb_on)]
    casia_on = [0.40, 0.42, 0.44, 0.46, 0.48, 0.50, 0.52, 0.54]
    casia_off = [u + d for u, d in zip(casia_on, [0.01, -0.02, 0.03, -0.01, 0.02, -0.03, 0.01, -0.01], strict=True)]
    for job, (se, corpus, uars) in enumerate([
        ("on", "emodb", emodb_on), ("off", "emodb", emodb_off), ("on", "casia", casia_on), ("off", "casia", casia_off),
    ]):
        write_results(
            tmp_path / str(job), corpus=corpus, uars=uars,
            overrides=[f"model/se={se}", f"dataset={corpus}"], choices={"model/se": se, "dataset": corpus},
            se=se == "on", variant=f"mssenet-paper-se_{se}-spatial_dropout-tab10-mfcc",
        )
    built = write_report(tmp_path, PAPER_BASELINE, wandb_project=None)
    family = [("model/se=off", corpus, metric) for corpus in ("emodb", "casia") for metric in METRICS]
    assert sorted(built.adjusted) == sorted(family)  # the pooled column is not in the family
    expected = stats.false_discovery_control([built.tests[key].wilcoxon_p for key in family], method="bh")
    assert [built.adjusted[key] for key in family] == pytest.approx(list(expected))
    assert significant(built, ("model/se=off", "emodb", "test/uar"))
    assert not significant(built, ("model/se=off", "casia", "test/uar"))
    text = (tmp_path / "report.md").read_text()
    assert "corrected by Benjamini-Hochberg (false discovery rate) over the 4 tests" in text
    assert text.count("*; t p=") == 2  # emodb, UAR and WAR
    with open(tmp_path / "report.csv") as stream:
        rows = {(r["row"], r["corpus"]): r for r in csv.DictReader(stream)}
    assert float(rows[("model/se=off", "emodb")]["test/uar_wilcoxon_p_bh"]) == pytest.approx(expected[0])


def test_benjamini_hochberg_leaves_untested_entries_out() -> None:
    adjusted = benjamini_hochberg([0.01, float("nan"), 0.04, 0.03])
    assert math.isnan(adjusted[1])
    assert adjusted[[0, 2, 3]] == pytest.approx([0.03, 0.04, 0.04])
