"""`python -m ser.training [HYDRA_OVERRIDES]`: the same command as `python train.py`."""

from ser.cli import train_main

if __name__ == "__main__":
    train_main()
