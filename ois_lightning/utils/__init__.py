"""Helpers of no paper concept: atomic writes, output-folder locks, process groups, timing, plots."""
