"""Training, validation and their outputs (plots, metrics, checkpoints)."""
