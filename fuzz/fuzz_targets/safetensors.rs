//! Any byte string given to the .safetensors reader, under any tensor name, returns a tensor whose
//! shape matches its data, or a structured error: never a panic or an abort.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use wgpu_attention::files::{read_safetensors_bytes, safetensors_names, HostData};

fuzz_target!(|bytes: &[u8]| {
    let path = Path::new("fuzz.safetensors");
    let names = match safetensors_names(path, bytes) {
        Ok(names) => names,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    for name in names.iter().map(String::as_str).chain(["missing"]) {
        match read_safetensors_bytes(path, bytes, name) {
            Ok(t) => {
                let count: usize = t.shape.iter().product();
                let len = match &t.data {
                    HostData::F32(v) => v.len(),
                    HostData::F16(v) => v.len(),
                    HostData::Bool(v) => v.len(),
                    HostData::U32(v) => v.len(),
                };
                assert_eq!(count, len, "{name}: shape {:?} does not match {len} elements", t.shape);
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
});
