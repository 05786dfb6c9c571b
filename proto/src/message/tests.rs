//! Hand-written wire fixtures for every control message and parameter.
