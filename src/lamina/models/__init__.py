"""Models: load what exists, build the tiny base's shape, generate, attention and kernels.

Layer 4: below methods and train; imports only core, governance, data and registry.
"""
