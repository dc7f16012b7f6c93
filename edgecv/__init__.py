"""edgecv: take a PyTorch vision model to an edge device and prove it still works there."""

__version__ = "0.1.0"

__all__ = ["__version__"]
