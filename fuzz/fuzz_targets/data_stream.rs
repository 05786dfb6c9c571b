//! Fuzz target: see `tiermesh_proto_fuzz::data_stream`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tiermesh_proto_fuzz::data_stream(data));
