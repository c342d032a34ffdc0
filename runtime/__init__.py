"""flotilla's local container runtime: images, root filesystems, namespaces, cgroups,
supervision, logs, ports and volumes on one host. Knows nothing of clusters."""
