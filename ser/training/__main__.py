"""`python -m ser.training [HYDRA_OVERRIDES]`: the same command as `python train.py` (`ser-train`)."""

from ser.commands import train

if __name__ == "__main__":
    train()
