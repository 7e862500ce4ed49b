"""Training: the recipe, the loop and its handlers, optimiser and schedule, distributed training, lr-find, sweeps."""
