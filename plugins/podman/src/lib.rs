//! Feature `podman` (being written).
