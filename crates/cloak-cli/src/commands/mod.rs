//! One module per verb: each has an `Args` struct and a `run` function.

pub mod app;
pub mod assemble;
pub mod attest;
pub mod audit;
pub mod build;
pub mod client;
pub mod convert;
pub mod copy;
pub mod decrypt;
pub mod eif;
pub mod encrypt;
pub mod inspect;
pub mod job;
pub mod ls_files;
pub mod manager;
pub mod measure;
pub mod proxy;
pub mod registry_cred;
pub mod run;
pub mod sgx;
pub mod task;
pub mod user;
