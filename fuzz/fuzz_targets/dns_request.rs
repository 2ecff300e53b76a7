//! Any bytes, as a DNS request from a sandbox: the handler must answer well-formed (same id,
//! a response, within the UDP size) or drop, and never panic. The same property as the
//! proptest in `crates/netd/src/dns/query.rs`, run by libFuzzer for as long as one likes.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use netd::dns::testing;
use netd::dns::Records;

fuzz_target!(|data: &[u8]| {
    static RECORDS: OnceLock<Records> = OnceLock::new();
    testing::check(data, RECORDS.get_or_init(testing::records));
});
