"""What a run records and where: results files written atomically, provenance, the output
directory's guard and locks, W&B runs, embedding plots. Below the training layer: nothing
here imports `ser.training`."""
