"""Provenance: the weights (and, later, the runtime image) proven the same on every node."""
