//! tiermesh link (in progress).
