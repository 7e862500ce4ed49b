"""Taking a model out of the app: the model bundle (ONNX + TorchScript + its threshold), verify and search."""
