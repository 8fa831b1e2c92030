"""Serving logic behind the Triton python models: plain classes, no pb_utils, testable in-process."""
