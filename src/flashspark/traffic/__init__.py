"""Harness traffic: a recording proxy (`record`) and the replay of what it recorded (`replay`)."""
