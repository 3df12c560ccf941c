//! Any bytes as a batch body: the split keeps at most the record limit, each
//! element is judged on its own, and nothing panics.
#![no_main]

/// A small limit, so that the fuzzer reaches the limit's path too.
const MAX_RECORDS: usize = 8;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some(accepted) = remaudit_server::fuzzing::batch(data, MAX_RECORDS) {
        assert!(accepted <= MAX_RECORDS);
    }
});
