//! Readers and writers of the run directory's files. Every error names the file, and for JSON
//! Lines the line.

use std::io::BufRead;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum RunDirError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}:{line}: {message}")]
    Parse { path: String, line: usize, message: String },
}

fn io_error(path: &Path, source: std::io::Error) -> RunDirError {
    RunDirError::Io { path: path.display().to_string(), source }
}

/// A JSON file as `T`.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, RunDirError> {
    let text = std::fs::read_to_string(path).map_err(|e| io_error(path, e))?;
    serde_json::from_str(&text).map_err(|e| RunDirError::Parse {
        path: path.display().to_string(),
        line: e.line(),
        message: e.to_string(),
    })
}

/// Writes `value` as pretty JSON (to a temporary file first, renamed over `path`: a reader never
/// sees half a file).
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<(), RunDirError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| RunDirError::Parse {
        path: path.display().to_string(),
        line: 0,
        message: e.to_string(),
    })?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text).map_err(|e| io_error(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_error(path, e))
}

/// Writes `records` as JSON Lines, next to the file first and then renamed over it: a reader
/// never sees half a file.
pub fn write_jsonl<T: Serialize>(path: &Path, records: &[T]) -> Result<(), RunDirError> {
    let mut text = String::new();
    for record in records {
        let line = serde_json::to_string(record).map_err(|e| RunDirError::Parse {
            path: path.display().to_string(),
            line: 0,
            message: e.to_string(),
        })?;
        text.push_str(&line);
        text.push('\n');
    }
    let tmp = path.with_extension("jsonl.tmp");
    std::fs::write(&tmp, text).map_err(|e| io_error(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_error(path, e))
}

/// Calls `each` with every record of a JSON Lines file, streamed; blank lines are skipped.
pub fn for_each_jsonl<T: DeserializeOwned>(path: &Path, mut each: impl FnMut(T)) -> Result<(), RunDirError> {
    let file = std::fs::File::open(path).map_err(|e| io_error(path, e))?;
    for (i, line) in std::io::BufReader::with_capacity(1 << 20, file).lines().enumerate() {
        let line = line.map_err(|e| io_error(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let record = serde_json::from_str(&line).map_err(|e| RunDirError::Parse {
            path: path.display().to_string(),
            line: i + 1,
            message: e.to_string(),
        })?;
        each(record);
    }
    Ok(())
}

/// Every record of a JSON Lines file.
pub fn read_jsonl<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>, RunDirError> {
    let mut out = Vec::new();
    for_each_jsonl(path, |r| out.push(r))?;
    Ok(out)
}

/// [`read_jsonl`], or nothing when the file does not exist (an optional file).
pub fn read_jsonl_if_present<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>, RunDirError> {
    if path.exists() {
        read_jsonl(path)
    } else {
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.jsonl");
        std::fs::write(&path, "{\"a\":1}\n\n{\"a\":\n").unwrap();
        let err = read_jsonl::<serde_json::Value>(&path).unwrap_err().to_string();
        assert!(err.contains("x.jsonl:3:"), "{err}");
        let missing = read_json::<serde_json::Value>(&dir.path().join("none.json")).unwrap_err().to_string();
        assert!(missing.contains("none.json"), "{missing}");
        assert!(read_jsonl_if_present::<serde_json::Value>(&dir.path().join("none.jsonl")).unwrap().is_empty());
    }

    #[test]
    fn json_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.json");
        write_json(&path, &serde_json::json!({"a": [1, 2]})).unwrap();
        let v: serde_json::Value = read_json(&path).unwrap();
        assert_eq!(v["a"][1], 2);
        assert!(!dir.path().join("v.json.tmp").exists());
    }
}
