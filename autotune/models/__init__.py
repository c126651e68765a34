"""Where pipelines come from (built-ins, folders, hub ids), their identity, and how one is called."""
