//! Process-wide settings for fast CPU training.

/// Keeps large temporary buffers in the heap instead of mmapping and unmapping
/// them on every tensor operation: with glibc's defaults, page faults took 23-43%
/// of CPU time in burn-flex training here (`../shared/docs/burn-notes.md`). Same
/// effect as `MALLOC_MMAP_THRESHOLD_=32MiB MALLOC_TRIM_THRESHOLD_=4GiB MALLOC_TOP_PAD_=512MiB`.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tunables; called before other threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 512 << 20);
    }
}
