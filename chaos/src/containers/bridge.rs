//! The Docker API bridge between `testcontainers` and an older Docker engine.
//!
//! `testcontainers` 0.27 talks to Docker through `bollard` 0.21, which names API version 1.53 in
//! every request path (`/v1.53/containers/create`) and does not negotiate. Debian 12's `docker.io`
//! (Docker 20.10) speaks API versions up to 1.41 and refuses any newer one ("client version 1.53
//! is too new"). The bridge listens on a unix socket of the lab's, asks the engine once for its
//! version (`GET /version`), and forwards every request with a newer version in its path lowered
//! to the engine's; everything else passes unchanged, streamed both ways — a followed log, and a
//! connection upgraded for attach, included. The lab points `testcontainers` at it with
//! `DOCKER_HOST` ([`Bridge::docker_host`]). Against an engine as new as the client the bridge
//! changes nothing.
//!
//! Every connection to the engine is made within [`CONNECT_TIMEOUT`], and its answer's head is
//! awaited for at most [`ANSWER_TIMEOUT`] (longer than bollard's own two minutes).
//!
//! The socket's directory outlives its process (which never drops its bridge): its name holds
//! the lab's identity, and the next bridge sweeps those of labs that are gone
//! ([`sweep_dead_bridges`]), as the containers' sweep does.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Empty, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(180);
/// A bridge's socket is `docker.sock` in a directory of the temporary directory named
/// `flashlab-docker-PID-START-XXXXXX`: its lab's identity ([`super::lab_identity`]), `:` as `-`.
const DIR_PREFIX: &str = "flashlab-docker-";

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("the Docker engine at {path}: {why} (is dockerd running? ci/setup starts it)")]
    Engine { path: String, why: String },
    #[error("the bridge's socket {path}: {source}")]
    Listen { path: String, source: std::io::Error },
}

/// An API version, `major.minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiVersion(pub u32, pub u32);

impl ApiVersion {
    pub fn parse(text: &str) -> Option<ApiVersion> {
        let (major, minor) = text.split_once('.')?;
        Some(ApiVersion(major.parse().ok()?, minor.parse().ok()?))
    }
}

impl std::fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

/// `path` with a version newer than `engine` in its first segment lowered to `engine`.
pub fn lowered(path_and_query: &str, engine: ApiVersion) -> String {
    let Some(rest) = path_and_query.strip_prefix("/v") else { return path_and_query.to_string() };
    let (version, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match ApiVersion::parse(version) {
        Some(asked) if asked > engine => format!("/v{engine}{tail}"),
        _ => path_and_query.to_string(),
    }
}

/// A running bridge; it stops when dropped.
#[derive(Debug)]
pub struct Bridge {
    socket: PathBuf,
    engine: ApiVersion,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Bridge {
    /// Asks the engine at `upstream` (a unix socket) for its version and starts forwarding to it.
    pub async fn start(upstream: &Path) -> Result<Bridge, BridgeError> {
        let engine = engine_version(upstream).await?;
        // A process never drops its bridge (it serves until the process ends), so each leaves
        // its socket's directory behind: the next bridge removes those of bridges that are gone.
        sweep_dead_bridges(&std::env::temp_dir());
        let prefix = format!("{DIR_PREFIX}{}-", super::lab_identity().replace(':', "-"));
        let dir = tempfile::Builder::new()
            .prefix(&prefix)
            .tempdir()
            .map_err(|source| BridgeError::Listen { path: std::env::temp_dir().display().to_string(), source })?;
        let socket = dir.path().join("docker.sock");
        let listener = UnixListener::bind(&socket)
            .map_err(|source| BridgeError::Listen { path: socket.display().to_string(), source })?;
        let upstream = Arc::new(upstream.to_path_buf());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    // Out of descriptors, say: not a hot loop while it lasts.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| forward(req, upstream.clone(), engine));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Ok(Bridge { socket, engine, task, _dir: dir })
    }

    /// What `DOCKER_HOST` must say for a client to go through the bridge.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// The engine's API version.
    pub fn engine(&self) -> ApiVersion {
        self.engine
    }
}

type Answer = Response<Either<Incoming, Full<Bytes>>>;

async fn forward(mut req: Request<Incoming>, upstream: Arc<PathBuf>, engine: ApiVersion) -> Result<Answer, Infallible> {
    let failed = |why: String| {
        let mut answer = Response::new(Either::Right(Full::new(Bytes::from(format!(
            "{{\"message\":\"flashlab docker bridge: {why}\"}}"
        )))));
        *answer.status_mut() = StatusCode::BAD_GATEWAY;
        Ok(answer)
    };
    let path = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/").to_string();
    match lowered(&path, engine).parse() {
        Ok(uri) => *req.uri_mut() = uri,
        Err(e) => return failed(format!("{path}: {e}")),
    }
    let client_upgrade = req.headers().contains_key(hyper::header::UPGRADE).then(|| hyper::upgrade::on(&mut req));
    let mut sender = match connect(&upstream).await {
        Ok(sender) => sender,
        Err(why) => return failed(why),
    };
    let mut answer = match tokio::time::timeout(ANSWER_TIMEOUT, sender.send_request(req)).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => return failed(e.to_string()),
        Err(_) => return failed(format!("no answer within {ANSWER_TIMEOUT:?}")),
    };
    if answer.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client) = client_upgrade {
            let engine_side = hyper::upgrade::on(&mut answer);
            tokio::spawn(async move {
                if let (Ok(client), Ok(engine_side)) = (client.await, engine_side.await) {
                    let _ =
                        tokio::io::copy_bidirectional(&mut TokioIo::new(client), &mut TokioIo::new(engine_side)).await;
                }
            });
        }
    }
    Ok(answer.map(Either::Left))
}

async fn connect(upstream: &Path) -> Result<hyper::client::conn::http1::SendRequest<Incoming>, String> {
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(upstream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(format!("{}: {e}", upstream.display())),
        Err(_) => return Err(format!("{}: no connection within {CONNECT_TIMEOUT:?}", upstream.display())),
    };
    let (sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    tokio::spawn(connection.with_upgrades());
    Ok(sender)
}

/// `GET /version` (unversioned: any engine answers it) → its `ApiVersion`.
pub async fn engine_version(upstream: &Path) -> Result<ApiVersion, BridgeError> {
    let fail = |why: String| BridgeError::Engine { path: upstream.display().to_string(), why };
    let ask = async {
        let stream = UnixStream::connect(upstream).await.map_err(|e| e.to_string())?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let req = Request::get("/version").header("host", "docker").body(Empty::new()).map_err(|e| e.to_string())?;
        let answer = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let body = answer.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        json["ApiVersion"]
            .as_str()
            .and_then(ApiVersion::parse)
            .ok_or_else(|| format!("no ApiVersion in {}", String::from_utf8_lossy(&body)))
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, ask).await {
        Ok(result) => result.map_err(fail),
        Err(_) => Err(fail(format!("no answer within {CONNECT_TIMEOUT:?}"))),
    }
}

/// Removes the socket directories in `temp` of bridges whose lab is gone, judged as the
/// sweep of containers judges ([`super::lab_alive`]: the process id with its start time). A
/// directory whose name holds no lab identity is left alone. Returns what it removed.
pub fn sweep_dead_bridges(temp: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(temp) else { return Vec::new() };
    let mut removed = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(mut parts) = name.strip_prefix(DIR_PREFIX).map(|rest| rest.splitn(3, '-')) else { continue };
        let (Some(pid), Some(start), Some(_)) = (parts.next(), parts.next(), parts.next()) else { continue };
        if pid.parse::<u32>().is_err() || start.parse::<u64>().is_err() {
            continue;
        }
        let dir = entry.path();
        if !super::lab_alive(&format!("{pid}:{start}")) && std::fs::remove_dir_all(&dir).is_ok() {
            removed.push(dir);
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A gone lab's directory goes, with or without its socket; a live lab's stays, with or
    /// without its socket (one about to bind it); other names are not touched.
    #[test]
    fn only_the_directories_of_bridges_that_are_gone_are_swept() {
        let temp = tempfile::tempdir().unwrap();
        let make = |name: &str| {
            let dir = temp.path().join(name);
            std::fs::create_dir(&dir).unwrap();
            dir
        };
        let me = crate::containers::lab_identity().replace(':', "-");
        let (pid, start) = me.split_once('-').unwrap();
        // This process id with another start time: a lab that is gone, its id reused.
        let gone = format!("{pid}-{}", start.parse::<u64>().unwrap() + 1);
        let dead = make(&format!("flashlab-docker-{gone}-a1b2c3"));
        drop(std::os::unix::net::UnixListener::bind(dead.join("docker.sock")).unwrap());
        let live = make(&format!("flashlab-docker-{me}-d4e5f6"));
        let _listener = std::os::unix::net::UnixListener::bind(live.join("docker.sock")).unwrap();
        let fresh = make(&format!("flashlab-docker-{me}-g7h8i9"));
        let unbound = make("flashlab-docker-4194999-1-j0k1l2");
        let other = make("other-4194999-1-dead");
        drop(std::os::unix::net::UnixListener::bind(other.join("docker.sock")).unwrap());
        let nameless = make("flashlab-docker-XyZ123");
        let mut swept = sweep_dead_bridges(temp.path());
        swept.sort();
        let mut gone = vec![dead.clone(), unbound.clone()];
        gone.sort();
        assert_eq!(swept, gone);
        assert!(!dead.exists() && !unbound.exists(), "the dead bridges' directories stay");
        assert!(live.exists() && fresh.exists() && other.exists(), "a live or fresh bridge's, or another's, went");
        assert!(nameless.exists(), "a directory without a lab's identity went");
    }

    #[test]
    fn a_newer_version_is_lowered_and_nothing_else_changes() {
        let engine = ApiVersion(1, 41);
        assert_eq!(lowered("/v1.53/containers/create?name=x", engine), "/v1.41/containers/create?name=x");
        assert_eq!(lowered("/v1.40/containers/json", engine), "/v1.40/containers/json");
        assert_eq!(lowered("/v1.41/info", engine), "/v1.41/info");
        assert_eq!(lowered("/version", engine), "/version");
        assert_eq!(lowered("/v2.0/x", engine), "/v1.41/x");
        assert_eq!(lowered("/volumes", engine), "/volumes");
        assert_eq!(lowered("/vx.y/z", engine), "/vx.y/z");
        assert_eq!(lowered("/v1.53", engine), "/v1.41");
    }

    #[test]
    fn versions_compare_by_number_not_text() {
        assert!(ApiVersion::parse("1.9").unwrap() < ApiVersion::parse("1.41").unwrap());
        assert_eq!(ApiVersion::parse("1.41"), Some(ApiVersion(1, 41)));
        assert_eq!(ApiVersion::parse("1"), None);
    }
}
