"""The training protocol: parameter groups, learning-rate policy, loss, step, loop, checkpoints."""
