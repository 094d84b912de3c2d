//! Feature `docker` (being written).
