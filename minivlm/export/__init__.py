"""Checkpoint -> Triton model repository: one declared spec per ONNX graph, one export and validation path
(`onnx_graph`), the vision encoder and router graphs, and the repository builder."""
