"""Docker's own wire contracts, spoken by runtime, agent and manager alike: error types with
dockerd's statuses, stream framing and timestamps, archive stat headers. Nothing here imports
gRPC, etcd or another flotilla package, so the runtime can use it without depending on either
side."""
