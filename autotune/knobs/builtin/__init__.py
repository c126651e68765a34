"""The built-in knobs, one module each: everything specific to a knob lives in its module (how it
applies, what it requires, its planner effect, its speed prior, its load-time arguments, its
conflicts). `autotune.knobs` imports every module here, in name order; a new knob is a new module
(and its conformance test in tests/knobs/).

The techniques are those of diffusers' "Reduce memory usage" and "Speed up inference" guides;
each `apply` uses diffusers' own switches (offload hooks, layerwise casting, VAE slicing/tiling,
attention processors, regional compile), nothing here re-implements them.
"""
