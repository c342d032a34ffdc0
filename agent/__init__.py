"""The node agent: registers the node in etcd and serves the manager over gRPC."""
