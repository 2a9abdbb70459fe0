//! A static zone file through the loader: the first line is the file name without
//! `.zone` (it gives the origin), the rest the file's text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // `$INCLUDE` reads any file named (zone files are the operator's): not fuzzed.
    if text.to_ascii_uppercase().contains("INCLUDE") {
        return;
    }
    let (stem, body) = text.split_once('\n').unwrap_or(("example.internal", text));
    if let Ok(zone) = consul_dns::fuzzing::zone_file(stem, body) {
        assert!(zone.records > 0, "a zone has at least its SOA");
    }
});
