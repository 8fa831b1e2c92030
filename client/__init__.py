"""Thin Python client for the mini-VLM Triton ensemble (no torch)."""
