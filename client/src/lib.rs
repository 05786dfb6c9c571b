//! tiermesh client (in progress).
