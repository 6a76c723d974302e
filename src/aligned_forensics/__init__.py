"""Aligned datasets (real photos + their autoencoder reconstructions) and fake-image detectors."""

__version__ = "0.1.0"
