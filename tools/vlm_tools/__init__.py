"""Tools around the runtime, installed with the `tools` extra and left out of the GPU image: the offline demo
model (`demo`), router training and evaluation (`router_training`) and the benchmarks (`bench`)."""
