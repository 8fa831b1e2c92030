"""The declared spec of every exported ONNX graph: its Triton model, tensors, dynamic axes and tolerance.

Tensor names, types and fixed dims come from `vlm_client.protocol`, so a graph, its config.pbtxt and the
client cannot drift apart (tests check all three).
"""
from __future__ import annotations

from minivlm.export.onnx_graph import GraphSpec
from vlm_client import protocol

BATCH, SEQUENCE = "batch", "sequence"

# fp32 ViT-base + projector: 12 layers of sums over up to 3072 products, then LayerNorm. ORT fuses attention,
# GELU and LayerNorm and sums in another order: measured max |ORT - PyTorch| was 3.5e-6 (tiny) and 4e-6 (full
# size, random weights) on outputs of magnitude ~1. Trained weights have larger activations, so allow 25x:
# 1e-4 is still far below what a real export bug (a wrong op, a baked-in batch size, stale weights) gives.
VISION_ENCODER_SPEC = GraphSpec(
    name=protocol.VISION_ENCODER,
    inputs=protocol.VISION_INPUTS,
    outputs=protocol.VISION_OUTPUTS,
    dynamic_axes={protocol.PIXEL_VALUES.name: {0: BATCH}, protocol.IMAGE_EMBEDS.name: {0: BATCH}},
    tolerance=1e-4,
)

# Probabilities in [0, 1] after a softmax or sigmoid: 1e-4 is far above float rounding (~1e-7) and far below
# what a wrong op, temperature or head gives.
ROUTER_SPEC = GraphSpec(
    name=protocol.ROUTER,
    inputs=protocol.ROUTER_INPUTS,
    outputs=protocol.ROUTER_OUTPUTS,
    dynamic_axes={**{t.name: {0: BATCH, 1: SEQUENCE} for t in protocol.ROUTER_INPUTS},
                  **{t.name: {0: BATCH} for t in protocol.ROUTER_OUTPUTS}},
    tolerance=1e-4,
)

GRAPH_SPECS = (VISION_ENCODER_SPEC, ROUTER_SPEC)
