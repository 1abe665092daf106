//! Process-wide allocator settings for CPU inference.
//!
//! A CPU forward pass allocates a few large activation buffers per layer (tens of MB at the
//! default token budget) and frees them a moment later. glibc's `malloc` serves allocations
//! above its mmap threshold (128 KiB, raised on the fly to at most 32 MiB) with a fresh `mmap`
//! and returns them with `munmap`, so every layer page-faults its outputs in again: on a
//! 2-core AMD EPYC that was about 10 % of the time of a ModernBERT-base rerank in the kernel.
//!
//! [`reuse_large_buffers`] raises the mmap and trim thresholds so those buffers are recycled
//! from the heap instead. It changes the whole process, so the library never calls it on its
//! own: the `tantivy-rerank` binary calls it at start-up, and an application that embeds the
//! library may do the same (or install an allocator such as mimalloc or jemalloc).

/// Largest single allocation kept on the heap instead of being mapped on its own.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: usize = 256 << 20;

/// Free memory at the top of the heap kept for reuse instead of being returned to the system.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: usize = 1 << 30;

/// Let glibc's `malloc` recycle large freed buffers instead of unmapping them; returns whether
/// the settings were applied (only on Linux with glibc; elsewhere it does nothing and returns
/// `false`).
///
/// The cost is memory that a long-running process keeps after a peak: freed buffers stay in
/// the heap for the next batch instead of going back to the system. Peak memory does not grow.
///
/// ```
/// // At the start of `main`, before any model runs.
/// let applied = tantivy_rerank_encoders::memory::reuse_large_buffers();
/// # let _ = applied;
/// ```
pub fn reuse_large_buffers() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let as_int = |v: usize| libc::c_int::try_from(v).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only changes allocator parameters; glibc validates the values and
        // returns 0 for one it refuses (newer versions cap the mmap threshold at 32 MiB).
        let mmap = unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, as_int(MMAP_THRESHOLD)) == 1
                || libc::mallopt(libc::M_MMAP_THRESHOLD, as_int(32 << 20)) == 1
        };
        // SAFETY: as above.
        let trim = unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, as_int(TRIM_THRESHOLD)) == 1 };
        tracing::debug!(mmap, trim, "malloc thresholds for large buffers");
        mmap && trim
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
