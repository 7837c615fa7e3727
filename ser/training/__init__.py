"""Training: the LightningModule and its metrics, folds, one fold's training and the one
experiment loop (`ser.training.engine.train`) with its protocols, resume, DDP, gathering.

Nothing is imported here, so that `ser.training.config` (the config hash) stays light.
"""
