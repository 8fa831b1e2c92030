"""Our decode step vs llama.cpp's, side by side (the code: tools/vlm_tools/bench/llama_cpp_compare.py).

    python benchmarks/llama_cpp_compare.py --help

Downloads the llama-cpp-python sdist from PyPI on its first run (see --help).
"""
from vlm_tools.bench.llama_cpp_compare import main

if __name__ == "__main__":
    main()
