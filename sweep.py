"""Named sweeps and their reports: `python sweep.py list|run|report ...` (see ser/sweeps/cli.py).

A thin wrapper of ser.sweeps.cli (also `python -m ser.sweeps`).
"""

from ser.sweeps.cli import run

if __name__ == "__main__":
    run()
