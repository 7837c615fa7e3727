"""The experiment protocols the engine runs, one per task config (`task._target_`):
cross-validation and cross-corpus evaluation (ser.training.protocols.base says what a
protocol provides)."""
