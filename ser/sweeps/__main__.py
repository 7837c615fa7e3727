"""`python -m ser.sweeps list|run|report ...`: the same command as `python sweep.py`."""

from ser.sweeps.cli import run

if __name__ == "__main__":
    run()
