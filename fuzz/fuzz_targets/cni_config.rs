//! Any bytes, as a CNI plugin configuration on stdin: parsing and checking must end in a
//! configuration or a spec error (decode, version, configuration), never a panic. The same
//! property as the proptest in `crates/cni-compat/src/lib.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = cni_compat::validate_config(data) {
        assert!(matches!(e.code, 1 | 2 | 4 | 6 | 7), "{e:?}");
    }
});
