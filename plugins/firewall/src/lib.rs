//! Feature `firewall` (being written).
