//! Test helpers shared by the api crate's integration tests.
#![allow(dead_code)]

pub mod fake_apiserver;

use std::path::{Path, PathBuf};

/// A directory removed on drop, also when the test fails.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let nonce: u64 = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
        let path = std::env::temp_dir().join(format!("gingham-api-{}-{nonce:x}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
