//! Deterministic simulation of the mesh on virtual time.
