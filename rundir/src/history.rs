//! `history.jsonl`: one [`Attempt`] per client operation. The record is defined where it is
//! written ([`loadgen::history`]); it is named here so that every reader finds it in one place.

pub use loadgen::history::{Attempt, Class, Op, MAINTENANCE};

/// Reads `history.jsonl` line by line, calling `each` with every attempt (memory bounded by one
/// line); errors name the line.
pub fn for_each(path: &std::path::Path, each: impl FnMut(Attempt)) -> Result<(), crate::RunDirError> {
    crate::io::for_each_jsonl(path, each)
}

/// Reads the whole history.
pub fn read(path: &std::path::Path) -> Result<Vec<Attempt>, crate::RunDirError> {
    crate::io::read_jsonl(path)
}
