"""`vlm bench` and `vlm perf-inputs`: throughput against the notebook baseline, transformers and the machine.

Modules, top to bottom: `workload` (the mixed requests every system runs), `stats` (percentiles, summaries),
`roofline` (what the hardware allows, from model shapes and measured rates), `machine` (measures those rates
with `probe`'s kernels, the best kept),
`inprocess` (the notebook pipeline, transformers `generate`, the served decoder's step), `served` (the Triton
ensemble under concurrent gRPC load), `server_stats` (Triton's per-model statistics, CPU per stub process),
`report` (ratios, JSON, plot), `run` (one full benchmark), `perf_inputs` (perf_analyzer `--input-data` files)
and `cli`. Beside them: `decode_step` (our decode step against transformers' and the bound) and
`llama_cpp_compare` (against llama.cpp, built by `llama_cpp_build`, weights written by `gguf_export`).
"""
