"""Cluster: launching, probing and stopping deployments (local process runtime first)."""
