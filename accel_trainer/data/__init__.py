"""Datasets, samplers and loaders for classification and detection."""
