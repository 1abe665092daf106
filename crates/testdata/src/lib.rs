//! Where the workspace's tests and benchmarks find the shared test data: real IR collections,
//! real tokenizers and weights, bench workloads (`../shared` beside the project root, or
//! `$TANTIVY_RERANK_SHARED`). A dev-dependency only; nothing in the libraries uses it.

use std::path::{Path, PathBuf};

/// The shared data folder: `$TANTIVY_RERANK_SHARED`, or `../shared` beside the project root.
/// A relative `$TANTIVY_RERANK_SHARED` is taken from the project root, not from the current
/// folder (cargo runs every test binary in its own crate's folder). Panics with a message
/// naming the folder and the variable when it is missing, so a test that needs it fails
/// loudly instead of skipping.
pub fn shared_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = match std::env::var_os("TANTIVY_RERANK_SHARED") {
        Some(v) if Path::new(&v).is_absolute() => PathBuf::from(v),
        Some(v) => root.join(v),
        None => root.join("../shared"),
    };
    assert!(
        dir.is_dir(),
        "shared data folder {} is missing: set TANTIVY_RERANK_SHARED to the folder holding data/ and models/",
        dir.display()
    );
    dir
}

#[cfg(test)]
mod tests {
    use super::shared_dir;

    /// The only test of this crate, so changing the variable races no other test.
    #[test]
    fn resolves_relative_paths_from_the_project_root_and_names_a_missing_folder() {
        let before = std::env::var_os("TANTIVY_RERANK_SHARED");
        // This test runs in crates/testdata, where "../shared" would be crates/shared.
        std::env::set_var("TANTIVY_RERANK_SHARED", "../shared");
        assert!(shared_dir().join("bench").is_dir());

        std::env::set_var("TANTIVY_RERANK_SHARED", "/nonexistent/shared-data");
        let err = std::panic::catch_unwind(shared_dir).expect_err("must panic");
        let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(msg.contains("/nonexistent/shared-data"), "{msg}");
        assert!(msg.contains("TANTIVY_RERANK_SHARED"), "{msg}");

        match before {
            Some(v) => std::env::set_var("TANTIVY_RERANK_SHARED", v),
            None => std::env::remove_var("TANTIVY_RERANK_SHARED"),
        }
    }
}
