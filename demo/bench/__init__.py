"""Benchmark: cost of every attack and defense, the app's full comparison, cold start and peak memory.

`python -m demo.bench [--models teaching,vit-b-32-random] [--repeats N] [--quick] [--out docs/benchmarks.md]`

For each model and device (CPU, and the GPU when there is one): median ms per image of every registered
attack and defense with default parameters, their image-encoder passes per image, and the overhead
ratio against single forward / forward+backward passes measured in the same run (see `measure`); the
full comparison as the app runs it; cold start and peak memory in fresh processes (see `probes`). The
report goes to docs/benchmarks.md with the machine description, and the numbers to a JSON next to it.
"""
