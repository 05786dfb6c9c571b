//! tiermesh codec (in progress).
