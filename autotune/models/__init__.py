"""Where pipelines come from: a model's configs read into one spec and built (pipelines.py), the
built-ins (builtins.py), one identity for every spelling of a model (identity.py), and how a
pipeline is called (call.py)."""
