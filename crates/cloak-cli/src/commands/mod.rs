//! One module per verb: each has an `Args` struct and a `run` function.

pub mod copy;
pub mod inspect;
pub mod ls_files;
