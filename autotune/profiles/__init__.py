"""Profiles: the file and its schema (profile.py), discovery with a typed reason (discovery.py),
entry choice under a ceiling (entries.py), the thin `apply_profile` (apply.py) and what it
reports (placement_diff.py), compile artifacts and warm-up."""
