#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| iron_agent::fuzzing::mcp_jsonrpc(data));
