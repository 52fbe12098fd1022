//! Benchmarks behind `ncdma bench`: each measures the reference kernel (and, where userspace
//! can time it, the real one) side by side in one run, reports medians of repetitions, and
//! prints ratios rather than absolute numbers alone, because the machines are shared and
//! noisy (`benchmarks.md`).

pub mod loopback;
pub mod memslots;
pub mod migrate;
pub mod qemu;
pub mod spte;
pub mod stats;
pub mod stream;
