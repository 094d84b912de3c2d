//! Feature `gxp` (being written).
