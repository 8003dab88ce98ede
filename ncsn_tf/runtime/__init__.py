"""What a run stands on: devices and strategy, the training state and its checkpoints,
atomic file writes, mixed precision and the progress line."""
