//! Paths to the shared test data (`../shared` beside the project, or `$TANTIVY_RERANK_SHARED`).

use std::path::PathBuf;

/// The shared folder; panics with a clear message when it is missing, so a test that needs it
/// fails loudly instead of skipping.
pub fn shared_dir() -> PathBuf {
    let dir = std::env::var("TANTIVY_RERANK_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
    assert!(
        dir.is_dir(),
        "shared test data not found at {} (set TANTIVY_RERANK_SHARED)",
        dir.display()
    );
    dir
}
