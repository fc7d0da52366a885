"""Prediction for radiology software: every landmark of a project's model on one image (or a few)."""
