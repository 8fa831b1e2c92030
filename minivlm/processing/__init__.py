"""Inputs and outputs as text and pixels: image bytes -> pixel values, prompts and tags, detection JSON."""
