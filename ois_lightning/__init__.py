"""ois_lightning: Order-Aware Interactive Segmentation in PyTorch Lightning."""
__version__ = "0.1.0"
