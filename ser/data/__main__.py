"""`python -m ser.data dataset=emodb dataset.root=PATH` (`ser-data`): summarise a dataset.

Prints per-class and per-speaker counts (expected versus found), duration statistics
from the audio headers and the feature shape. Composes ser/conf/train.yaml like train.py,
so any dataset override that training accepts works here; it writes no files (the
synthetic corpus is generated on first use, as for training).
"""

from ser.commands import data

if __name__ == "__main__":
    data()
