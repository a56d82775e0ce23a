//! The account as a whole: take its data away (export), or close it (delete).

pub mod delete;
pub mod export;
