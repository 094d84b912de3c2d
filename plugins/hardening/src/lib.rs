//! Feature `hardening` (being written).
