//! One module per subcommand: each turns parsed arguments into library calls and renders
//! the answer as text or JSON.

pub(crate) mod memtype;
