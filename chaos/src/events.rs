//! `events.jsonl`: what the lab did and when — fault start and stop (with the check that it took
//! effect), process starts and exits, phase changes. One JSON object per line:
//! `{"ts_ms": <unix ms>, "event": "<name>", ...fields}`. Each line is written and flushed when it
//! happens, so a lab killed mid-run leaves every event it had recorded.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

/// The longest event log kept in memory (for [`EventLog::recent`]); older entries are only in the
/// file.
const MEMORY_EVENTS: usize = 10_000;

/// An append-only event log, shared by clones.
#[derive(Debug, Clone, Default)]
pub struct EventLog {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    file: Option<(PathBuf, File)>,
    recent: std::collections::VecDeque<Value>,
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl EventLog {
    /// A log kept in memory only.
    pub fn in_memory() -> EventLog {
        EventLog::default()
    }

    /// A log appended to `path` (created if missing).
    pub fn to_file(path: &Path) -> std::io::Result<EventLog> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(EventLog {
            inner: Arc::new(Mutex::new(Inner { file: Some((path.to_path_buf(), file)), recent: Default::default() })),
        })
    }

    /// The file it writes, if any.
    pub fn path(&self) -> Option<PathBuf> {
        self.lock().file.as_ref().map(|(p, _)| p.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `event` with `fields` (an object; other values go under `"data"`). Returns the
    /// line as recorded. A write error is logged, not returned: losing the log must not stop
    /// a heal.
    pub fn record(&self, event: &str, fields: Value) -> Value {
        let mut line = Map::new();
        line.insert("ts_ms".into(), unix_ms().into());
        line.insert("event".into(), event.into());
        match fields {
            Value::Object(map) => line.extend(map),
            Value::Null => {}
            other => {
                line.insert("data".into(), other);
            }
        }
        let line = Value::Object(line);
        let mut inner = self.lock();
        if let Some((path, file)) = &mut inner.file {
            let mut text = line.to_string();
            text.push('\n');
            if let Err(e) = file.write_all(text.as_bytes()).and_then(|()| file.flush()) {
                tracing::error!(path = %path.display(), error = %e, "cannot write the event log");
            }
        }
        if inner.recent.len() == MEMORY_EVENTS {
            inner.recent.pop_front();
        }
        inner.recent.push_back(line.clone());
        line
    }

    /// The events recorded by this process, oldest first (at most the last 10,000).
    pub fn recent(&self) -> Vec<Value> {
        self.lock().recent.iter().cloned().collect()
    }
}
