"""Operator tooling: the `flotilla` command, the dev cluster and test images."""
