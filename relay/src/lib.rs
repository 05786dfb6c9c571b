//! tiermesh relay (in progress).
