"""Runs this model's `model.onnx` with ONNX Runtime inside the python backend.

For the pip-installed tritonserver, which has no onnxruntime backend; the GPU image serves the same file
with Triton's native onnxruntime backend instead (config.onnxruntime.pbtxt, chosen at export time).
"""
import triton_python_backend_utils as pb_utils

from minivlm.serving.onnx_model import python_backend_model

TritonPythonModel = python_backend_model(pb_utils)
