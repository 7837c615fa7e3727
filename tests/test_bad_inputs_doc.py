"""docs/bad_inputs.md is true: each row's input, run as its command, prints its message.

The rows run in child processes (tests/helpers/bad_input_cases.py; two at once, every other
row each) whose memory is limited: some rows are forged files, and a regression there must
fail this test, not crash or starve the session.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest

from tests.helpers.bad_input_cases import SETUPS
from tests.helpers.cli_runs import concurrently
from tests.helpers.config import ROOT

DOC = ROOT / "docs" / "bad_inputs.md"
ROW = re.compile(r"^\| `(?P<id>[a-z0-9-]+)` \| (?P<what>[^|]+) \| `(?P<command>[^`]+)` \| `(?P<message>[^`]+)` \|$")
WILDCARD = "…"


def doc_rows() -> list[dict[str, str]]:
    rows = [m.groupdict() for line in DOC.read_text().splitlines() if (m := ROW.match(line))]
    assert rows, f"no rows found in {DOC}"
    return rows


def expected(message: str, places: dict[str, str]) -> re.Pattern[str]:
    """The row's message as a pattern: placeholders replaced, `…` any text."""
    pattern = re.escape(message).replace(re.escape(WILDCARD), ".*")
    for name, value in places.items():
        pattern = pattern.replace(re.escape(name), re.escape(value))
    return re.compile(f"error: {pattern}")


def test_rows_are_well_formed() -> None:
    rows = doc_rows()
    table_lines = [line for line in DOC.read_text().splitlines() if line.startswith("| `")]
    assert len(table_lines) == len(rows), "a table row that the test cannot read"
    ids = [row["id"] for row in rows]
    assert len(ids) == len(set(ids)), "an id used twice"
    assert not set(SETUPS) - set(ids), f"inputs built for rows the page lacks: {sorted(set(SETUPS) - set(ids))}"
    for row in rows:
        uses_files = "{file}" in row["command"] + row["message"] or "{root}" in row["command"]
        assert not uses_files or row["id"] in SETUPS, f"{row['id']}: no input is built for it"


def run_rows(rows: list[dict[str, str]], folder: Path) -> dict[str, dict]:
    """Run `rows` in one memory-limited child process (tests/helpers/bad_input_cases.py); their results."""
    folder.mkdir()
    (folder / "rows.json").write_text(json.dumps([(row["id"], row["command"]) for row in rows]))
    done = subprocess.run(
        [sys.executable, "-m", "tests.helpers.bad_input_cases", str(folder / "rows.json"),
         str(folder / "results.json"), str(folder / "rows")],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"},
    )
    started = re.findall(r"^row: (\S+)$", done.stderr, re.MULTILINE)
    assert done.returncode == 0, (
        f"the child died (exit {done.returncode}) in row {started[-1] if started else '?'}:\n{done.stderr[-3000:]}"
    )
    return json.loads((folder / "results.json").read_text())


def test_every_row_prints_its_message(tmp_path: Path) -> None:
    rows = doc_rows()
    # Two children, every other row each, at once (a child is a process of its own: two cores run two).
    halves = concurrently(*(partial(run_rows, rows[half::2], tmp_path / f"half-{half}") for half in (0, 1)))
    results = {**halves[0], **halves[1]}
    wrong = []
    for row in rows:
        result = results[row["id"]]
        lines = result["stderr"].splitlines()
        errors = [line for line in lines if line.startswith("error: ")]
        pattern = expected(row["message"], result["places"])
        if (
            result["code"] != 2 or len(errors) != 1 or lines[-1] != errors[0]
            or "Traceback" in result["stderr"] or not pattern.fullmatch(errors[0])
        ):
            wrong.append(f"{row['id']}: exit {result['code']}, printed {errors or lines[-3:]}")
    assert not wrong, "docs/bad_inputs.md and the behaviour differ:\n" + "\n".join(wrong)


@pytest.mark.parametrize("page", ["README.md", "docs/ARCHITECTURE.md"])
def test_the_page_is_linked(page: str) -> None:
    assert "bad_inputs.md" in (ROOT / page).read_text()
