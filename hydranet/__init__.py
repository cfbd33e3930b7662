"""hydranet: multi-camera, multi-task perception networks in PyTorch."""

__version__ = "0.1.0"
