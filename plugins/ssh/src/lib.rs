//! Feature `ssh` (being written).
