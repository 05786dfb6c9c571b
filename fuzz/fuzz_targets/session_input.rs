//! Fuzz target: see `tiermesh_proto_fuzz::session_input`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tiermesh_proto_fuzz::session_input(data));
