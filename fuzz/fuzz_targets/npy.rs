//! Any byte string given to the .npy reader returns a tensor whose shape matches its data, or a
//! structured error: never a panic, an abort or an allocation the header alone asked for.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use wgpu_attention::files::{read_npy_bytes, HostData};

fuzz_target!(|bytes: &[u8]| {
    match read_npy_bytes(Path::new("fuzz.npy"), bytes, "input") {
        Ok(t) => {
            let count: usize = t.shape.iter().product();
            let len = match &t.data {
                HostData::F32(v) => v.len(),
                HostData::F16(v) => v.len(),
                HostData::Bool(v) => v.len(),
                HostData::U32(v) => v.len(),
            };
            assert_eq!(count, len, "shape {:?} does not match {len} elements", t.shape);
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
