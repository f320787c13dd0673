#![no_main]
libfuzzer_sys::fuzz_target!(
    // Key generation before the first input: under load it can outlast the per-input timeout.
    init: cloak_fuzz::init(),
    |data: &[u8]| cloak_fuzz::annotations(data)
);
