"""Training: the step (losses into gradients), the held-out loss, the loop, the learning rate."""
