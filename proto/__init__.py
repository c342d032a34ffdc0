"""Contracts: the agent's gRPC service and the records kept in etcd (generated code lives here)."""
