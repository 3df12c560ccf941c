//! Any bytes as a single-record body: decoding and validation answer yes or
//! no, and never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = remaudit_server::fuzzing::record(data);
});
