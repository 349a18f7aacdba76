#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| picsift_fuzz::heif_container(data));
