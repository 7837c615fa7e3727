"""Train and evaluate a speech emotion recognition model: `python train.py dataset=... model=...`.

A thin wrapper: the command is ser.cli.train_main (also `python -m ser.training`), its
configs ship in the package (ser/conf).
"""

from ser.cli import train_main

if __name__ == "__main__":
    train_main()
