#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| picsift_fuzz::gain_map_xmp(data));
