"""Profiles: the file, discovery, `apply_profile`, compile artifacts and warm-up."""
