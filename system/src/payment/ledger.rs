//! The payment provider's ledger: one record per idempotency key, captured or cancelled, kept in
//! memory and appended to a JSON-lines file so that a killed provider restarts knowing every
//! capture it made (written through the page cache at once: `kill -9` loses nothing).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChargeStatus {
    Captured,
    /// Cancelled before any capture: the key can never capture.
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Charge {
    /// The idempotency key (the processor's `request_id/attempt`).
    pub request_id: String,
    pub user_id: String,
    pub amount: u64,
    pub status: ChargeStatus,
    pub at_ms: u64,
}

#[derive(Debug)]
pub struct Ledger {
    charges: HashMap<String, Charge>,
    /// Captures in the order they happened.
    captures: Vec<String>,
    file: File,
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("ledger {path} line {line}: {source}")]
    Corrupt { path: String, line: usize, source: serde_json::Error },
}

impl Ledger {
    /// Opens (or creates) the ledger file and replays it.
    pub fn open(path: &Path) -> Result<Ledger, LedgerError> {
        let io = |source| LedgerError::Io { path: path.display().to_string(), source };
        let mut charges = HashMap::new();
        let mut captures = Vec::new();
        if path.exists() {
            let text = std::fs::read(path).map_err(io)?;
            let mut good_len = 0usize;
            let lines: Vec<&[u8]> = text.split_inclusive(|b| *b == b'\n').collect();
            for (index, line) in lines.iter().enumerate() {
                let complete = line.ends_with(b"\n");
                let charge: Charge = match serde_json::from_slice(line) {
                    Ok(c) if complete => c,
                    // A torn last line (killed mid-write) is not a capture: its caller never got
                    // an answer. It is cut off so that later appends start on a clean line.
                    _ if index + 1 == lines.len() && !complete => break,
                    Ok(c) => c,
                    Err(source) => {
                        return Err(LedgerError::Corrupt { path: path.display().to_string(), line: index + 1, source })
                    }
                };
                good_len += line.len();
                if charge.status == ChargeStatus::Captured {
                    captures.push(charge.request_id.clone());
                }
                charges.insert(charge.request_id.clone(), charge);
            }
            if good_len < text.len() {
                OpenOptions::new().write(true).open(path).and_then(|f| f.set_len(good_len as u64)).map_err(io)?;
            }
        }
        let file = OpenOptions::new().create(true).append(true).open(path).map_err(io)?;
        Ok(Ledger { charges, captures, file })
    }

    pub fn get(&self, key: &str) -> Option<&Charge> {
        self.charges.get(key)
    }

    /// Records `charge` (the caller checked the key is free, or is moving it to cancelled).
    pub fn record(&mut self, charge: Charge) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(&charge).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.file.write_all(&line)?;
        if charge.status == ChargeStatus::Captured {
            self.captures.push(charge.request_id.clone());
        }
        self.charges.insert(charge.request_id.clone(), charge);
        Ok(())
    }

    /// Every capture, oldest first.
    pub fn captures(&self) -> impl Iterator<Item = &Charge> {
        self.captures.iter().filter_map(|key| self.charges.get(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reopening_replays_captures_and_cancellations_and_skips_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        {
            let mut ledger = Ledger::open(&path).unwrap();
            for (key, status) in [("a/1", ChargeStatus::Captured), ("b/1", ChargeStatus::Cancelled)] {
                ledger
                    .record(Charge { request_id: key.into(), user_id: "u".into(), amount: 2, status, at_ms: 1 })
                    .unwrap();
            }
        }
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"request_id\":\"c/1\",\"us")
            .unwrap();
        let ledger = Ledger::open(&path).unwrap();
        assert_eq!(ledger.get("a/1").unwrap().status, ChargeStatus::Captured);
        assert_eq!(ledger.get("b/1").unwrap().status, ChargeStatus::Cancelled);
        assert!(ledger.get("c/1").is_none());
        assert_eq!(ledger.captures().count(), 1);
        drop(ledger);
        // The torn tail was cut: a new record appends cleanly and survives another reopen.
        let mut ledger = Ledger::open(&path).unwrap();
        let charge = Charge {
            request_id: "d/1".into(),
            user_id: "u".into(),
            amount: 1,
            status: ChargeStatus::Captured,
            at_ms: 2,
        };
        ledger.record(charge).unwrap();
        drop(ledger);
        assert_eq!(Ledger::open(&path).unwrap().captures().count(), 2);
    }
}
