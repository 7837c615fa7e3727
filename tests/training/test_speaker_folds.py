"""Speaker-independent folds (cv=speaker): no speaker in both training and test, everyone
tested once; IEMOCAP leave-one-session-out; RAVDESS in blocks of actors."""

from __future__ import annotations

import numpy as np
import pytest

from ser.tracking.results import read_json
from ser.training.engine import train
from ser.training.folds import make_folds


def rows_of(groups: list[str], rows: np.ndarray) -> set[str]:
    return {groups[i] for i in rows}


def check_speaker_independent(folds, speakers: list[str]) -> None:
    tested = np.concatenate([test for _, test in folds])
    assert sorted(tested.tolist()) == list(range(len(speakers))), "every utterance tested once"
    for train_rows, test_rows in folds:
        assert not rows_of(speakers, train_rows) & rows_of(speakers, test_rows)
        assert len(train_rows) + len(test_rows) == len(speakers)


def test_leave_one_speaker_out_never_shares_a_speaker_and_covers_everyone() -> None:
    # Unequal utterance counts and an order mixed by class, as in a real manifest.
    speakers = ["03", "08", "09", "10", "11"] * 6 + ["03", "08", "16"] * 5
    folds = make_folds("speaker", len(speakers), None, 46, speakers=speakers)
    check_speaker_independent(folds, speakers)
    assert [rows_of(speakers, test) for _, test in folds] == [{s} for s in ["03", "08", "09", "10", "11", "16"]]


def test_iemocap_style_sessions_give_leave_one_session_out() -> None:
    sessions = [f"Session{n}" for n in range(1, 6) for _ in range(8)]
    speakers = [f"{s}_{'F' if i % 2 else 'M'}" for i, s in enumerate(sessions)]
    folds = make_folds("speaker", len(speakers), None, 0, speakers=speakers, sessions=sessions)
    assert len(folds) == 5
    check_speaker_independent(folds, speakers)
    for n, (_, test) in enumerate(folds, start=1):
        assert rows_of(sessions, test) == {f"Session{n}"}
        assert rows_of(speakers, test) == {f"Session{n}_F", f"Session{n}_M"}  # both speakers
    # Asked for explicitly, the speakers of a session are held out one at a time.
    by_speaker = make_folds("speaker", len(speakers), None, 0, speakers, sessions, group_by="speaker")
    assert len(by_speaker) == 10
    check_speaker_independent(by_speaker, speakers)


def test_ravdess_speaker_groups_are_contiguous_blocks_of_actors() -> None:
    actors = [f"{a:02d}" for a in range(1, 25) for _ in range(3)]
    folds = make_folds("speaker", len(actors), 6, 0, speakers=actors)
    check_speaker_independent(folds, actors)
    blocks = [sorted(rows_of(actors, test)) for _, test in folds]
    assert blocks == [[f"{a:02d}" for a in range(start, start + 4)] for start in range(1, 25, 4)]
    for block in blocks:  # odd actors are male, even female: two of each per block
        assert sum(int(a) % 2 for a in block) == 2
    # Numbers sort naturally, not as text: "10" comes after "9".
    natural = make_folds("speaker", 3, None, 0, speakers=["10", "9", "2"])
    assert [rows_of(["10", "9", "2"], t) for _, t in natural] == [{"2"}, {"9"}, {"10"}]


@pytest.mark.parametrize(
    ("speakers", "folds", "kwargs", "message"),
    [
        (["03"] * 5, None, {}, "at least 2 speakers.*only speaker '03'"),
        (["03", "08", "09", "10"], 5, {}, "cv.folds=5 is more than the 4 speakers"),
        (["03", "08"], None, {"group_by": "session"}, "no session"),
        (["03", "08"], None, {"group_by": "actor"}, "cv.group_by"),
        (["03", None], None, {}, "speaker of every utterance"),
    ],
)
def test_bad_speaker_settings_give_clear_errors(speakers, folds, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        make_folds("speaker", len(speakers), folds, 0, speakers=speakers, **kwargs)


def test_kfold_needs_a_number_of_folds() -> None:
    with pytest.raises(ValueError, match="cv.folds must be set"):
        make_folds("kfold", 10, None, 0)


@pytest.mark.slow
def test_cv_speaker_trains_leave_one_speaker_out_from_the_manifest(tiny_config, tmp_path) -> None:
    cfg = tiny_config("cv=speaker", "cv.folds=null", "dataset.generator.num_speakers=3")
    train(cfg)
    record = read_json(tmp_path / "run" / "results.json")
    assert record["cv"]["strategy"] == "speaker" and record["cv"]["folds"] == 3
    folds = record["folds"]
    assert [f["test_speakers"] for f in folds] == [["03"], ["08"], ["09"]]
    assert sum(f["num_test"] for f in folds) == record["num_utterances"]
    assert all(f["num_train"] + f["num_test"] == record["num_utterances"] for f in folds)
