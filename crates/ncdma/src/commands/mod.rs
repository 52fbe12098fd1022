//! One module per subcommand: each turns parsed arguments into library calls and renders
//! the answer as text or JSON.

pub(crate) mod bench;
pub(crate) mod demo;
pub(crate) mod explain;
pub(crate) mod memtype;
pub(crate) mod probe;
pub(crate) mod replay;
pub(crate) mod run;
pub(crate) mod scenarios;
