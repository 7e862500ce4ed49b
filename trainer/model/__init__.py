"""The model: backbones and embedding heads, losses and miners, device, checkpoints, inference on a run."""
