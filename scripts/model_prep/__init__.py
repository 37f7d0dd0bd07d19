"""Shared helpers of the model scripts (download, export, compress); imports nothing of the project."""
