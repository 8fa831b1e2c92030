"""Routing data, training of the MiniLM router heads, their evaluation (accuracy, calibration, compound)."""
