"""Datasets: label formats, scanning, the built-in synthetic data, augmentation and loading."""
