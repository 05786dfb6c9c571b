//! Hand-written wire fixtures for the data plane.
