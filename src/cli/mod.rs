//! The `vigil` command line: each subcommand in its own module, dispatched from `main`.

pub mod judge;
