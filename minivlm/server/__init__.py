"""The real tritonserver from the nvidia-pytriton wheel: find it, start it, watch it, stop it cleanly."""
