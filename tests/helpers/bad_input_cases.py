"""The bad inputs of docs/bad_inputs.md, produced and run: `python -m tests.helpers.bad_input_cases`.

tests/test_bad_inputs_doc.py reads the table, and runs every row here, in child processes
(two, every other row each) whose memory is limited (forged files are among the rows: a regression there is
a crash or a huge allocation, which must fail the test, not kill the session). Each row
is run as its command runs it (`train.py` -> ser.training.engine.train, `-m ser.data` -> the
summary, composed as the commands compose it, Hydra's errors in one line; `-m ser.tools.predict`
and `-m ser.tools.export` -> their `main`) through ser.cli.run_cli, and what it printed and
its exit code are recorded.

A row's SETUP (by id; the registry is tests/helpers/case_inputs.py, the rows of issue 21 are
in untrusted_data_cases.py) writes the files it needs under a fresh folder and returns the
values of the placeholders its command and message use: `{file}` (the offending file)
and `{root}` (dataset.root). Rows without one are settings alone.
"""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from tests.helpers import forged_files as forged
from tests.helpers import untrusted_data_cases  # noqa: F401  (registers the SETUPs of its rows)
from tests.helpers.audio_files import deny, write_wav
from tests.helpers.case_inputs import (
    SETUPS,
    Placeholders,
    Setup,
    emodb_with,
    huge_samples,
    label_folders,
    manifest_with,
    row_config,
    setup,
)
from tests.helpers.corpus_trees import make_emodb_tree, make_iemocap_tree, make_ravdess_tree
from tests.helpers.feature_files import RunsShell, overflow_in_float32, save_shared, shared_arrays


# -- corpora and audio ------------------------------------------------------------------
@setup("root-missing")
def _(folder: Path, patch: pytest.MonkeyPatch, row: str) -> Placeholders:
    return {"{root}": str(folder / "not-downloaded")}


@setup("root-other-corpus")
def _(folder: Path, patch: pytest.MonkeyPatch, row: str) -> Placeholders:
    return {"{root}": str(make_ravdess_tree(folder / "download"))}


@setup("root-too-high")
def _(folder: Path, patch: pytest.MonkeyPatch, row: str) -> Placeholders:
    make_emodb_tree(folder / "downloads" / "emodb", ["03a01Wa.wav"])
    return {"{root}": str(folder / "downloads"), "{file}": str(folder / "downloads" / "emodb")}


@setup("unknown-label")
def _(folder: Path, patch: pytest.MonkeyPatch, row: str) -> Placeholders:
    return emodb_with(folder, write_wav, "03a01Xa.wav")


def garbage(path: Path) -> None:
    path.write_bytes(b"this is not audio at all, just some text " * 4)


def truncated(path: Path) -> None:
    write_wav(path, seconds=0.05)
    path.write_bytes(path.read_bytes()[:100])


def no_samples(path: Path) -> None:
    soundfile.write(str(path), np.zeros(0, np.float32), 16000, subtype="PCM_16")


def non_finite(path: Path) -> None:
    signal = np.full(800, 0.1, np.float32)
    signal[10] = np.nan
    soundfile.write(str(path), signal, 16000, subtype="FLOAT")


AUDIO_WRITERS: dict[str, Callable[[Path], object]] = {
    "audio-garbage": garbage,
    "audio-truncated": truncated,
    "audio-no-samples": no_samples,
    "audio-nan": non_finite,
    "audio-rate": lambda path: forged.wav_with_rate(path, 1_000_003),
    "audio-rate-odd": lambda path: forged.wav_with_rate(path, 44_101),
    "audio-channels": lambda path: forged.wav_with_channels(path, 200),
    "audio-length": forged.flac_with_frames,  # FLAC content; libsndfile reads it by content
    # 38 KB whose header declares 8 channels x 384 kHz x an hour: 41 GiB to decode.
    "audio-huge-samples": huge_samples,
    "audio-declared-size": lambda path: forged.flac_with_frames(path, 384_000 * 3600, channels=8, rate=384_000),
}


@setup(*AUDIO_WRITERS)
def _(folder: Path, patch: pytest.MonkeyPatch, row: str) -> Placeholders:
    return emodb_with(folder, AUDIO_WRITERS[row])


@setup("audio-permission")
def _(folder: Path, patch: pytest.MonkeyPatch, row: str) -> Placeholders:
    places = emodb_with(folder, write_wav)
    deny(patch, Path(places["{file}"]))  # as root, chmod 000 would not stop the read
    return places


def iemocap_utterance(folder: Path) -> tuple[Path, Path]:
    root = make_iemocap_tree(folder / "iemocap")
    return root, root / "Session1" / "sentences" / "wav" / "Ses01F_impro01" / "Ses01F_impro01_F000.wav"


@setup("audio-missing")
def _(folder: Path, patch: pytest.MonkeyPatch, row: str) -> Placeholders:
    root, utterance = iemocap_utterance(folder)
    utterance.unlink()
    return {"{root}": str(root), "{file}": str(utterance)}


@setup("audio-directory")
def _(folder: Path, patch: pytest.MonkeyPatch, row: str) -> Placeholders:
    root, utterance = iemocap_utterance(folder)
    utterance.unlink()
    utterance.mkdir()
    return {"{root}": str(root), "{file}": str(utterance)}


@setup("label-file-permission")
def _(folder: Path, patch: pytest.MonkeyPatch, row: str) -> Placeholders:
    root, _utterance = iemocap_utterance(folder)
    label_file = root / "Session1" / "dialog" / "EmoEvaluation" / "Ses01F_impro01.txt"
    deny(patch, label_file)
    return {"{root}": str(root), "{file}": str(label_file)}


# -- your own data: manifests and label folders ------------------------------------------
TWO_CLASSES = ["path,label", "a.wav,happy", "b.wav,sad"]
MANIFESTS: dict[str, Callable[[Path], Placeholders]] = {
    "manifest-not-found": lambda f: {"{file}": str(f / "mine" / "train.csv")},
    "manifest-format": lambda f: manifest_with(f, TWO_CLASSES, name="train.txt"),
    "manifest-columns": lambda f: manifest_with(f, ["path,emotion", "a.wav,happy"]),
    "manifest-audio-missing": lambda f: manifest_with(f, ["path,label", "a.wav,happy", "gone.wav,sad"]),
    "manifest-empty-label": lambda f: manifest_with(f, ["path,label", "a.wav,happy", "b.wav,"]),
    "manifest-duplicate": lambda f: manifest_with(f, [*TWO_CLASSES, "./a.wav,sad"]),
    "manifest-class-too-small": lambda f: manifest_with(
        f, ["path,label", *(f"{a}.wav,happy" for a in "abcd"), "e.wav,sad", "f.wav,sad"]
    ),
    "manifest-split": lambda f: manifest_with(f, ["path,label,split", "a.wav,happy,dev"]),
    "manifest-duration": lambda f: manifest_with(f, ["path,label,duration", "a.wav,happy,long"]),
    "manifest-json": lambda f: manifest_with(f, ['{"path": "a.wav", "label": "happy"}', "not json"], name="train.jsonl"),
    "manifest-predefined-no-split": lambda f: manifest_with(f, TWO_CLASSES),
    "manifest-classes": lambda f: manifest_with(f, TWO_CLASSES),
    "manifest-label-map": lambda f: manifest_with(f, TWO_CLASSES),
    "manifest-duration-ms": lambda f: manifest_with(f, ["path,label,duration", "a.wav,happy,10", "b.wav,sad,10"]),
    "manifest-duration-huge": lambda f: manifest_with(f, ["path,label,duration", "a.wav,happy,1e6"]),
    "manifest-duration-max": lambda f: manifest_with(f, ["path,label,duration", "a.wav,happy,1e308"]),
}


@setup(*MANIFESTS)
def _(folder: Path, patch: pytest.MonkeyPatch, row: str) -> Placeholders:
    return MANIFESTS[row](folder)


@setup("folder-no-audio")
def _(folder: Path, patch: pytest.MonkeyPatch, row: str) -> Placeholders:
    root = folder / "mine"
    (root / "happy").mkdir(parents=True)
    (root / "happy" / "notes.txt").write_text("recorded 2024")
    (root / "happy" / ".DS_Store").write_bytes(b"\x00")
    return {"{root}": str(root)}


def ssl_weights(write: Callable[[Path], object]) -> Setup:
    def prepare_row(folder: Path, patch: pytest.MonkeyPatch, row: str) -> Placeholders:
        patch.setenv("TORCH_HOME", str(folder / "torch"))  # no cached download
        patch.delenv("SER_SSL_WEIGHTS", raising=False)
        weights = folder / "wavlm.pt"
        write(weights)
        return {"{root}": str(label_folders(folder)), "{file}": str(weights),
                "{cache}": str(folder / "torch" / "hub" / "checkpoints" / "wavlm_base_plus.pth")}

    return prepare_row


SSL_WEIGHTS: dict[str, Callable[[Path], object]] = {
    "ssl-no-weights": lambda path: None,
    "ssl-weights-missing": lambda path: None,
    "ssl-weights-garbage": garbage,
    "ssl-weights-code": lambda path: path.write_bytes(pickle.dumps({"x": RunsShell(path.parent / "ran")})),
    "ssl-weights-other": lambda path: torch.save({"classifier.weight": torch.zeros(2, 3)}, path),
}
for _row, _write in SSL_WEIGHTS.items():
    setup(_row)(ssl_weights(_write))


# -- feature files ----------------------------------------------------------------------
def feature_file(folder: Path, data: bytes) -> Placeholders:
    return {"{file}": str(forged.write(folder / "EMODB.npy", data))}


def changed(change: Callable[[dict], object]) -> Callable[[Path], Placeholders]:
    def write(folder: Path) -> Placeholders:
        arrays = shared_arrays()
        change(arrays)
        return {"{file}": str(save_shared(folder / "EMODB.npy", arrays))}

    return write


FEATURE_FILES: dict[str, Callable[[Path], Placeholders]] = {
    "cv-folds-too-many": changed(lambda a: None),
    "npy-missing": lambda folder: {"{file}": str(folder / "EMODB.npy")},
    "npy-runs-code": lambda folder: feature_file(folder, pickle.dumps({"x": RunsShell(folder / "ran")})),
    "npy-object-array": lambda f: feature_file(f, forged.npy_container(forged.forged_object_array())),
    "npy-object-field": lambda f: feature_file(f, forged.npy_container(forged.object_field())),
    "npy-allocation": lambda f: feature_file(f, forged.allocation_bomb()),
    "npy-memo": lambda f: feature_file(f, forged.memo_bomb()),
    "npy-huge-header": lambda f: feature_file(f, forged.huge_npy_header()),
    "npy-single-array": lambda f: feature_file(f, forged.npy_header("<f4", (3, 8, 39)) + bytes(3 * 8 * 39 * 4)),
    "npy-garbage": lambda f: feature_file(f, b"\x00\x01 not a pickle"),
    "npy-missing-y": changed(lambda a: a.pop("y")),
    "npy-classes": changed(lambda a: a.update(y=np.eye(8, dtype=np.float32)[np.arange(28) % 8])),
    "npy-rows": changed(lambda a: a.update(y=a["y"][:-1])),
    "npy-x-dims": changed(lambda a: a.update(x=a["x"][:, :, 0])),
    "npy-tie": changed(lambda a: a["y"].__setitem__(3, 0.0)),
    "npy-nan-x": changed(lambda a: a["x"].__setitem__((0, 0, 0), np.nan)),
    "npy-overflow": changed(overflow_in_float32),
    "npy-nan-y": changed(lambda a: a["y"].__setitem__((2, 0), np.nan)),
    "npy-no-frames": changed(lambda a: a.update(x=a["x"][:, :0])),
    "npy-no-rows": changed(lambda a: a.update(x=a["x"][:0], y=np.zeros(0, np.int64))),
    "npy-index-range": changed(lambda a: a.update(y=np.full(28, 7))),
}


@setup(*FEATURE_FILES)
def _(folder: Path, patch: pytest.MonkeyPatch, row: str) -> Placeholders:
    return FEATURE_FILES[row](folder)


# -- running a row ----------------------------------------------------------------------
def prepare(row: str, folder: Path, patch: pytest.MonkeyPatch) -> Placeholders:
    function = SETUPS.get(row)
    return {} if function is None else function(folder, patch, row)


def substitute(text: str, places: Placeholders) -> str:
    for name, value in places.items():
        text = text.replace(name, value)
    return text


def run_row(row: str, command: str, folder: Path) -> dict[str, object]:
    """Run one row's command in this process; its exit code and what it printed to stderr."""
    from ser.cli import hydra_errors_in_one_line, run_cli
    from ser.commands import summarise
    from ser.tools.export import main as export_main
    from ser.tools.predict import main as predict_main
    from ser.training.engine import train

    folder.mkdir(parents=True)
    with contextlib.ExitStack() as stack:
        patch = stack.enter_context(pytest.MonkeyPatch.context())
        places = prepare(row, folder, patch)
        programs = {"python train.py": train, "python -m ser.data": summarise}
        tools = {"python -m ser.tools.predict": predict_main, "python -m ser.tools.export": export_main}
        program = next((p for p in [*programs, *tools] if command.startswith(p + " ") or command == p), None)
        if program is None:
            raise ValueError(f"{row}: unknown command {command!r}")
        arguments = substitute(command, places)[len(program):].split()
        stderr = io.StringIO()
        code: object = 0
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            try:
                if program in tools:  # key=value arguments, their own run_cli
                    tools[program](arguments)
                else:
                    # As the commands compose their config: Hydra's errors in one line (ser.commands).
                    with hydra_errors_in_one_line():
                        cfg = row_config(arguments, folder)
                    run_cli(programs[program], cfg)
            except SystemExit as exit_:
                code = exit_.code
    return {"code": code, "stderr": stderr.getvalue(), "places": places}


@contextlib.contextmanager
def announced(row: str) -> Iterator[None]:
    # If the process dies inside a row, the parent reads which one from stderr.
    print(f"row: {row}", file=sys.__stderr__, flush=True)
    yield


def main(rows_path: str, results_path: str, folder: str) -> None:
    import ser.training.engine  # noqa: F401  (imported before the memory limit)

    forged.limit_memory()
    rows = json.loads(Path(rows_path).read_text())
    results = {}
    for row, command in rows:
        with announced(row):
            results[row] = run_row(row, command, Path(folder) / row)
    Path(results_path).write_text(json.dumps(results))


if __name__ == "__main__":
    main(*sys.argv[1:])
