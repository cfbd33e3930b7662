"""hydranet: multi-camera, multi-task perception networks in PyTorch."""

__all__ = ["__version__"]

__version__ = "0.1.0"
