"""Training: how a model is optimised (setup, loop, objectives, runs, stages, the tiny base).

Layer 6: above models and methods; never imports eval.
"""
