//! The lab's webhook receiver: Alertmanager's notifications, kept and written down as they
//! arrive.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::{MonitoringError, Notification};

/// Notifications kept in memory (the file has them all).
const MAX_KEPT: usize = 10_000;
use crate::ports::loopback;

/// The lab's webhook: Alertmanager POSTs each notification here; it is kept in memory and
/// appended to a file as it arrives.
#[derive(Debug)]
pub(super) struct Receiver {
    url: String,
    received: Arc<Mutex<Vec<Notification>>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Receiver {
    pub(super) async fn start(log: PathBuf) -> Result<Receiver, MonitoringError> {
        use axum::routing::post;
        let listener = tokio::net::TcpListener::bind(loopback(0)).await.map_err(MonitoringError::Receiver)?;
        let addr = listener.local_addr().map_err(MonitoringError::Receiver)?;
        let received: Arc<Mutex<Vec<Notification>>> = Arc::default();
        let state = (received.clone(), Arc::new(log));
        let app = axum::Router::new().route("/alertmanager", post(receive)).with_state(state);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Receiver { url: format!("http://{addr}/alertmanager"), received, server: Some(server) })
    }

    pub(super) fn url(&self) -> &str {
        &self.url
    }

    pub(super) fn notifications(&self) -> Vec<Notification> {
        self.received.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(super) fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

type ReceiverState = (Arc<Mutex<Vec<Notification>>>, Arc<PathBuf>);

async fn receive(
    axum::extract::State((received, log)): axum::extract::State<ReceiverState>,
    axum::Json(body): axum::Json<Value>,
) -> axum::http::StatusCode {
    let notification = Notification { received_ms: now_ms(), body };
    if let Ok(line) = serde_json::to_string(&notification) {
        use std::io::Write;
        if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(log.as_path()) {
            let _ = writeln!(file, "{line}");
        }
    }
    let mut kept = received.lock().unwrap_or_else(|p| p.into_inner());
    // Bounded: a `flashlab up` left running for days keeps the newest in memory; every
    // notification stays in the file.
    if kept.len() >= MAX_KEPT {
        kept.remove(0);
    }
    kept.push(notification);
    axum::http::StatusCode::OK
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
