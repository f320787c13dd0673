#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| cloak_fuzz::sigstruct(data));
