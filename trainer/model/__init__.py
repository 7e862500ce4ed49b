"""The model: backbones and embedding heads, losses and miners, device, checkpoints."""
