"""Tools beside the library: the benchmark (`python -m tools.bench`) and the GPU check (`python -m tools.gpucheck`).
They measure and check the package `common` from outside it; nothing in `common` imports them."""
