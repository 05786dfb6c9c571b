//! tiermesh certs (in progress).
