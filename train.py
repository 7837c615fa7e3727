"""Train and evaluate a speech emotion recognition model: `python train.py dataset=... model=...`.

A thin wrapper: the command is ser.commands.train (also `ser-train` and
`python -m ser.training`), its configs ship in the package (ser/conf).
"""

from ser.commands import train

if __name__ == "__main__":
    train()
