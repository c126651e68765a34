"""Measuring one candidate: typed records, the worker and its protocol, timing, quality, backends."""
