//! Fuzz target: see `tiermesh_proto_fuzz::control_message`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tiermesh_proto_fuzz::control_message(data));
