//! Helpers of the encoders' integration tests: fixture models, copies to break, loading.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use tantivy_rerank_encoders::{CrossEncoder, CrossEncoderOptions, DeviceSpec, EncoderError};

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Copy a fixture model into a temporary directory we can break.
pub fn copy_fixture(name: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture(name)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), tmp.path().join(entry.file_name())).unwrap();
    }
    tmp
}

pub fn load(dir: &Path) -> Result<CrossEncoder, EncoderError> {
    CrossEncoder::from_dir(dir, CrossEncoderOptions::default().device(DeviceSpec::Cpu))
}

pub fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&path, v.to_string()).unwrap();
}
