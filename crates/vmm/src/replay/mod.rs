//! Replay: a JSON list of KVM uAPI calls run on a [`Backend`](crate::backend::Backend), each
//! call's answer printed and checked against what the file expects.
//!
//! The file is a list of [`Entry`]s, each a [`Call`] with an optional [`Expect`]: [`parse`]
//! reads it and [`to_json`] writes it; [`Replayer`] runs it, and [`Report`] holds the
//! answers. The same file runs on the reference kernel and on `/dev/kvm`, which is how the
//! conformance tests compare the two.

mod call;
mod format;
mod report;
mod runner;
mod value;

pub use call::{
    Call, CheckExtension, CloseDevice, CreateDevice, DeviceAttr, EnableCap, GetDirtyLog, HostAddr,
    POOL_SIZE, Region,
};
pub use format::{Entry, Expect, FormatError, parse, to_json};
pub use report::{Answer, Report, Step};
pub use runner::{ReplayError, Replayer};
