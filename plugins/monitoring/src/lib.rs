//! Feature `monitoring` (being written).
