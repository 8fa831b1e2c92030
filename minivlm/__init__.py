"""The mini-VLM runtime: what a server (and the GPU image) installs. Tools live in `vlm_tools`, the SDK in
`vlm_client`; see docs/architecture.md for the map.

Sub-packages, bottom to top: `processing` (images, prompts, detection JSON), `model` (the notebook's modules,
checkpoint loading), `decoding` (KV-cached decoder, sampling, batches), `routing` (query -> task),
`serving` (the logic behind each Triton python model), `export` (checkpoint -> model repository),
`server` (the tritonserver process). Nothing here imports `vlm_tools`.
"""
