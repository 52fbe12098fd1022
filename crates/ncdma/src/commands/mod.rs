//! One module per subcommand: each turns parsed arguments into library calls and renders
//! the answer as text or JSON.

pub(crate) mod bench;
pub(crate) mod demo;
pub(crate) mod explain;
pub(crate) mod memtype;
pub(crate) mod migrate;
pub(crate) mod probe;
pub(crate) mod progress;
pub(crate) mod replay;
pub(crate) mod run;
pub(crate) mod scenarios;
pub(crate) mod snapshot;
pub(crate) mod vm_args;
