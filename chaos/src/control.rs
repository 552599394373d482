//! The control socket of `flashlab up`: how a second shell injects, lists and heals faults
//! during a game day.
//!
//! A Unix socket, because the injector can kill processes: the socket lives in a directory only
//! the lab's user can enter (mode 0700, owned by that user), the socket itself is mode 0600, and
//! the server also checks the peer's uid (`SO_PEERCRED`) on every connection.
//!
//! Protocol: one JSON [`Request`] line in, one JSON [`Response`] line out, then the connection
//! closes. Requests are bounded in size (64 KiB) and in time (10 s to send one).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::faults::{Fault, Target};
use crate::injector::{FaultInfo, HealReport, Injector};

/// The longest request line accepted.
const MAX_REQUEST_BYTES: u64 = 64 * 1024;
/// How long a client has to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client waits for an answer: a fault that restarts a component waits for it to be
/// ready (up to ~75 s for a processor).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(180);
/// Connections served at once; more wait.
const MAX_CONNECTIONS: usize = 16;

/// What a client asks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    Inject(Fault),
    List,
    Heal(u64),
    HealAll,
    /// The components of the running lab.
    Targets,
}

/// What the lab answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Injected(FaultInfo),
    Faults(Vec<FaultInfo>),
    Healed(Vec<HealReport>),
    Targets(Vec<Target>),
    Error(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control socket {path}: {why}")]
    Setup { path: String, why: String },
    #[error(
        "no flashlab up answers on {path} ({source}); start one with `flashlab up`, or pass the socket it printed with --control"
    )]
    NotRunning { path: String, source: std::io::Error },
    #[error("control socket {path}: {why}")]
    Exchange { path: String, why: String },
}

/// The socket `flashlab up` listens on by default: `$FLASHLAB_CONTROL`, else
/// `$XDG_RUNTIME_DIR/flashlab/control.sock`, else `/tmp/flashlab-<uid>/control.sock`.
pub fn default_socket_path() -> PathBuf {
    if let Some(path) = std::env::var_os("FLASHLAB_CONTROL") {
        return path.into();
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR") {
        return Path::new(&dir).join("flashlab").join("control.sock");
    }
    PathBuf::from(format!("/tmp/flashlab-{}", nix::unistd::getuid())).join("control.sock")
}

/// A bound control socket; the file is removed when it drops.
#[derive(Debug)]
pub struct ControlSocket {
    path: PathBuf,
    listener: UnixListener,
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl ControlSocket {
    /// Binds `path`, refusing when another lab answers there; a stale socket file is replaced.
    pub async fn bind(path: &Path) -> Result<ControlSocket, ControlError> {
        let setup = |why: String| ControlError::Setup { path: path.display().to_string(), why };
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| setup(format!("creating {}: {e}", dir.display())))?;
        let meta = std::fs::metadata(dir).map_err(|e| setup(e.to_string()))?;
        let uid = nix::unistd::getuid().as_raw();
        if meta.uid() != uid {
            return Err(setup(format!("{} belongs to uid {}, not to us ({uid})", dir.display(), meta.uid())));
        }
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| setup(format!("chmod 700 {}: {e}", dir.display())))?;
        if path.exists() {
            if UnixStream::connect(path).await.is_ok() {
                return Err(setup(
                    "another flashlab up is running with this socket; stop it or give this one --control PATH".into(),
                ));
            }
            std::fs::remove_file(path).map_err(|e| setup(format!("removing a stale socket: {e}")))?;
        }
        let listener = UnixListener::bind(path).map_err(|e| setup(e.to_string()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| setup(format!("chmod 600: {e}")))?;
        Ok(ControlSocket { path: path.to_path_buf(), listener })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves requests until the returned future is dropped.
    pub async fn serve(self, injector: Injector) {
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        let uid = nix::unistd::getuid().as_raw();
        loop {
            let stream = match self.listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "control socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let injector = injector.clone();
            tokio::spawn(async move {
                let _permit = permit;
                match stream.peer_cred() {
                    Ok(cred) if cred.uid() == uid => {}
                    other => {
                        tracing::warn!(peer = ?other, "control socket: refused a peer of another user");
                        return;
                    }
                }
                if let Err(e) = serve_one(stream, &injector).await {
                    tracing::warn!(error = %e, "control socket: request failed");
                }
            });
        }
    }
}

async fn serve_one(stream: UnixStream, injector: &Injector) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST_BYTES));
    let response = match tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)).await {
        Err(_) => Response::Error(format!("no request within {REQUEST_TIMEOUT:?}")),
        Ok(Err(e)) => Response::Error(format!("reading the request: {e}")),
        Ok(Ok(_)) if !line.ends_with('\n') => {
            Response::Error(format!("the request must be one JSON line of at most {MAX_REQUEST_BYTES} bytes"))
        }
        Ok(Ok(_)) => match serde_json::from_str::<Request>(&line) {
            Err(e) => Response::Error(format!("malformed request: {e}")),
            Ok(request) => answer(request, injector).await,
        },
    };
    let mut text = serde_json::to_string(&response).unwrap_or_else(|e| format!(r#"{{"error":"{e}"}}"#));
    text.push('\n');
    write.write_all(text.as_bytes()).await?;
    write.shutdown().await
}

async fn answer(request: Request, injector: &Injector) -> Response {
    match request {
        Request::Inject(fault) => match injector.inject(fault).await {
            Ok(info) => Response::Injected(info),
            Err(e) => Response::Error(e.to_string()),
        },
        Request::List => Response::Faults(injector.list()),
        Request::Heal(id) => match injector.heal(id).await {
            Ok(report) => Response::Healed(vec![report]),
            Err(e) => Response::Error(e.to_string()),
        },
        Request::HealAll => Response::Healed(injector.heal_all("healed").await),
        Request::Targets => Response::Targets(injector.testbed().lock().await.targets()),
    }
}

/// Sends `request` to the lab listening on `path` and returns its answer.
pub async fn call(path: &Path, request: &Request) -> Result<Response, ControlError> {
    let exchange = |why: String| ControlError::Exchange { path: path.display().to_string(), why };
    let stream = UnixStream::connect(path)
        .await
        .map_err(|source| ControlError::NotRunning { path: path.display().to_string(), source })?;
    let (read, mut write) = stream.into_split();
    let mut text = serde_json::to_string(request).map_err(|e| exchange(e.to_string()))?;
    text.push('\n');
    let talk = async {
        write.write_all(text.as_bytes()).await?;
        let mut line = String::new();
        BufReader::new(read.take(16 * 1024 * 1024)).read_line(&mut line).await?;
        Ok::<_, std::io::Error>(line)
    };
    let line = tokio::time::timeout(ANSWER_TIMEOUT, talk)
        .await
        .map_err(|_| exchange(format!("no answer within {ANSWER_TIMEOUT:?}")))?
        .map_err(|e| exchange(e.to_string()))?;
    serde_json::from_str(&line).map_err(|e| exchange(format!("malformed answer ({e}): {line:?}")))
}
