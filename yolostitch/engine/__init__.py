"""Training, validation, inference (detect) and their outputs (plots, metrics, checkpoints, drawings, label files)."""
