//! A TCP fault proxy (Toxiproxy-class), on tokio: it stands between a client and a component
//! and injects network faults per direction — `Upstream` (client → component) and `Downstream`
//! (component → client).
//!
//! Toxics: latency + jitter, bandwidth limit, blackhole (hold the connection, drop the data),
//! reset_peer (abort with an RST), slow_close (delay the close), slicer (cut data into small
//! pieces with pauses), limit_data (close after N bytes). Each has a toxicity: the share of
//! connections it affects, drawn once per connection from a seeded generator. And the whole
//! proxy can go [down](FaultProxy::set_down): new connections are refused and open ones closed.
//!
//! A fault applies to connections already open as well as new ones: each pump reads the
//! current toxics before forwarding every chunk. With no toxic set, a chunk is forwarded as soon
//! as it is read; a latency delays each chunk from its own arrival (a delay line: the pump keeps
//! reading while chunks wait), as a slow network would.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Which way data flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Client → component.
    Upstream,
    /// Component → client.
    Downstream,
}

/// One network fault.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Toxic {
    /// Each chunk waits `latency` plus a uniform `0..=jitter`.
    Latency {
        #[serde(with = "crate::faults::duration_text")]
        latency: Duration,
        #[serde(default, with = "crate::faults::duration_text")]
        jitter: Duration,
    },
    /// At most this many bytes per second.
    Bandwidth { bytes_per_s: u64 },
    /// Data is read and dropped; the connection stays open.
    Blackhole,
    /// The connection is aborted with a TCP reset.
    ResetPeer,
    /// When a side closes, the close reaches the other side this much later.
    SlowClose {
        #[serde(with = "crate::faults::duration_text")]
        delay: Duration,
    },
    /// Data goes in pieces of at most `bytes`, `delay` apart.
    Slicer {
        bytes: usize,
        #[serde(with = "crate::faults::duration_text")]
        delay: Duration,
    },
    /// The connection is closed after `bytes` bytes in this direction.
    LimitData { bytes: u64 },
}

impl Toxic {
    /// The toxic's name in the fault catalogue (`latency`, `reset_peer`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Toxic::Latency { .. } => "latency",
            Toxic::Bandwidth { .. } => "bandwidth",
            Toxic::Blackhole => "blackhole",
            Toxic::ResetPeer => "reset_peer",
            Toxic::SlowClose { .. } => "slow_close",
            Toxic::Slicer { .. } => "slicer",
            Toxic::LimitData { .. } => "limit_data",
        }
    }
}

/// A toxic, the share of connections it affects (0..=1), and — when set — the one client
/// address those connections come from (a Redis replica binds its replication connection to
/// an address of its own: a toxic can then hit replication and spare the clients).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ToxicSetting {
    pub toxic: Toxic,
    pub toxicity: f64,
    pub from: Option<std::net::IpAddr>,
}

/// What decides which toxics touch a connection: its draw (against each toxicity) and where
/// it comes from.
#[derive(Debug, Clone, Copy)]
struct Conn {
    draw: f64,
    peer: std::net::IpAddr,
}

#[derive(Debug, Default)]
struct Toxics {
    upstream: Vec<ToxicSetting>,
    downstream: Vec<ToxicSetting>,
}

#[derive(Debug)]
struct Shared {
    /// Where connections go; can change (a component is restarted on a new port). With several,
    /// each new connection goes to the next in turn, skipping one that refuses (a front for
    /// several gateways).
    upstream_addrs: Mutex<Vec<SocketAddr>>,
    next_upstream: std::sync::atomic::AtomicUsize,
    toxics: RwLock<Toxics>,
    rng: Mutex<StdRng>,
    /// Bumped on every change, so that pumps blocked in a toxic notice.
    changes: watch::Sender<u64>,
    down: AtomicBool,
    connections: AtomicU64,
    /// Connections open now, by the address they come from.
    open: Mutex<std::collections::HashMap<std::net::IpAddr, u64>>,
    /// What a client gets when no upstream takes its connection (the front's maintenance page);
    /// none: the connection is reset.
    fallback: RwLock<Option<Arc<Vec<u8>>>>,
    fallback_answers: AtomicU64,
}

/// A running proxy. Dropping it stops accepting; [`FaultProxy::set_down`] also closes the open
/// connections.
#[derive(Debug)]
pub struct FaultProxy {
    listen: SocketAddr,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.shared.down.store(true, Ordering::SeqCst);
        self.shared.changes.send_modify(|v| *v += 1);
    }
}

/// How much a pump reads at once.
const CHUNK: usize = 16 * 1024;

impl FaultProxy {
    /// Listens on `listen` (port 0 for any) and forwards to `upstream`.
    pub async fn start(listen: SocketAddr, upstream: SocketAddr, seed: u64) -> std::io::Result<FaultProxy> {
        let listener = TcpListener::bind(listen).await?;
        let listen = listener.local_addr()?;
        let (changes, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            upstream_addrs: Mutex::new(vec![upstream]),
            next_upstream: std::sync::atomic::AtomicUsize::new(0),
            toxics: RwLock::new(Toxics::default()),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            changes,
            down: AtomicBool::new(false),
            connections: AtomicU64::new(0),
            open: Mutex::new(std::collections::HashMap::new()),
            fallback: RwLock::new(None),
            fallback_answers: AtomicU64::new(0),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(FaultProxy { listen, shared, accept })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.listen
    }

    /// Where new connections go.
    pub fn upstream(&self) -> SocketAddr {
        self.shared.upstream_addrs.lock().unwrap_or_else(|p| p.into_inner())[0]
    }

    /// Sends new connections to `upstream` from now on.
    pub fn set_upstream(&self, upstream: SocketAddr) {
        self.set_upstreams(vec![upstream]);
    }

    /// Spreads new connections over `upstreams` in turn, skipping those that refuse. An empty
    /// list is ignored.
    pub fn set_upstreams(&self, upstreams: Vec<SocketAddr>) {
        if !upstreams.is_empty() {
            *self.shared.upstream_addrs.lock().unwrap_or_else(|p| p.into_inner()) = upstreams;
        }
    }

    /// What a client gets when no upstream takes its connection: `response`, written once its
    /// request head has arrived (see [`crate::maintenance`]); `None`: a reset, as before.
    pub fn set_fallback(&self, response: Option<Vec<u8>>) {
        *self.shared.fallback.write().unwrap_or_else(|p| p.into_inner()) = response.map(Arc::new);
    }

    /// How many clients got the fallback answer.
    pub fn fallback_answers(&self) -> u64 {
        self.shared.fallback_answers.load(Ordering::Relaxed)
    }

    /// The toxics in force in `direction`.
    pub fn toxics(&self, direction: Direction) -> Vec<ToxicSetting> {
        let toxics = self.shared.toxics.read().unwrap_or_else(|p| p.into_inner());
        match direction {
            Direction::Upstream => toxics.upstream.clone(),
            Direction::Downstream => toxics.downstream.clone(),
        }
    }

    /// Whether the proxy is down.
    pub fn is_down(&self) -> bool {
        self.shared.down.load(Ordering::SeqCst)
    }

    /// Removes the toxic named `name` (see [`Toxic::name`]) for every client from `direction`,
    /// if set.
    pub fn remove(&self, direction: Direction, name: &str) {
        self.remove_from(direction, name, None);
    }

    /// Removes the toxic named `name` limited to clients at `from` (`None`: the one for every
    /// client) from `direction`, if set.
    pub fn remove_from(&self, direction: Direction, name: &str, from: Option<std::net::IpAddr>) {
        {
            let mut toxics = self.shared.toxics.write().unwrap_or_else(|p| p.into_inner());
            let list = match direction {
                Direction::Upstream => &mut toxics.upstream,
                Direction::Downstream => &mut toxics.downstream,
            };
            list.retain(|s| !(s.toxic.name() == name && s.from == from));
        }
        self.shared.changes.send_modify(|v| *v += 1);
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// Connections from `peer` open now (forwarded, not yet closed).
    pub fn open_from(&self, peer: std::net::IpAddr) -> u64 {
        self.shared.open.lock().unwrap_or_else(|p| p.into_inner()).get(&peer).copied().unwrap_or(0)
    }

    /// Sets a toxic in `direction`, replacing one of the same kind for the same connections
    /// (`from`).
    pub fn set(&self, direction: Direction, setting: ToxicSetting) {
        {
            let mut toxics = self.shared.toxics.write().unwrap_or_else(|p| p.into_inner());
            let list = match direction {
                Direction::Upstream => &mut toxics.upstream,
                Direction::Downstream => &mut toxics.downstream,
            };
            // One toxic of a kind per scope: a latency for every connection and one for an
            // address (or for two addresses: two replicas' links) stand side by side.
            list.retain(|s| {
                std::mem::discriminant(&s.toxic) != std::mem::discriminant(&setting.toxic) || s.from != setting.from
            });
            list.push(setting);
        }
        self.shared.changes.send_modify(|v| *v += 1);
    }

    /// Removes every toxic; the proxy forwards plainly again.
    pub fn heal(&self) {
        *self.shared.toxics.write().unwrap_or_else(|p| p.into_inner()) = Toxics::default();
        self.shared.changes.send_modify(|v| *v += 1);
    }

    /// Down: refuse new connections and close the open ones. Up: accept again.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
        self.shared.changes.send_modify(|v| *v += 1);
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (client, peer) = match listener.accept().await {
            Ok((client, peer)) => (client, peer.ip()),
            Err(e) => {
                // Out of file descriptors and the like: pause rather than spin.
                tracing::warn!(error = %e, "fault proxy: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if shared.down.load(Ordering::SeqCst) {
            // Refused: closed at once with a reset.
            let _ = client.set_zero_linger();
            drop(client);
            continue;
        }
        shared.connections.fetch_add(1, Ordering::Relaxed);
        let shared = shared.clone();
        tokio::spawn(async move {
            let Some(upstream) = connect_upstream(&shared).await else {
                let fallback = shared.fallback.read().unwrap_or_else(|p| p.into_inner()).clone();
                match fallback {
                    Some(response) => {
                        let mut client = client;
                        if crate::maintenance::answer(&mut client, &response).await {
                            shared.fallback_answers.fetch_add(1, Ordering::Relaxed);
                        }
                        crate::maintenance::linger(client).await;
                    }
                    None => {
                        let _ = client.set_zero_linger();
                    }
                }
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = upstream.set_nodelay(true);
            // One draw per connection decides which toxics (by toxicity) affect it.
            let draw: f64 = shared.rng.lock().unwrap_or_else(|p| p.into_inner()).gen();
            let conn = Conn { draw, peer };
            let _open = OpenConnection::count(&shared, peer);
            let (client_read, client_write) = client.into_split();
            let (upstream_read, upstream_write) = upstream.into_split();
            let killed = Arc::new(tokio::sync::Notify::new());
            let up = pump(client_read, upstream_write, Direction::Upstream, conn, shared.clone());
            let down = pump(upstream_read, client_write, Direction::Downstream, conn, shared);
            // A reset (or going down) on either side ends both: the first pump to finish with
            // `Abort` resets its peer socket; the other is dropped here, closing its halves.
            tokio::select! {
                end = up => if end == End::Abort { killed.notify_waiters() },
                end = down => if end == End::Abort { killed.notify_waiters() },
            }
        });
    }
}

/// One connection in [`Shared::open`] while it lives.
struct OpenConnection {
    shared: Arc<Shared>,
    peer: std::net::IpAddr,
}

impl OpenConnection {
    fn count(shared: &Arc<Shared>, peer: std::net::IpAddr) -> OpenConnection {
        *shared.open.lock().unwrap_or_else(|p| p.into_inner()).entry(peer).or_insert(0) += 1;
        OpenConnection { shared: shared.clone(), peer }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        let mut open = self.shared.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.peer);
            }
        }
    }
}

/// Each upstream's connect limit.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The next upstream in turn that accepts a connection (each tried once, bounded).
async fn connect_upstream(shared: &Shared) -> Option<TcpStream> {
    let upstreams = shared.upstream_addrs.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let first = shared.next_upstream.fetch_add(1, Ordering::Relaxed);
    for k in 0..upstreams.len() {
        let addr = upstreams[(first + k) % upstreams.len()];
        if let Ok(Ok(stream)) = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            return Some(stream);
        }
    }
    None
}

fn active(shared: &Shared, direction: Direction, conn: Conn) -> Vec<Toxic> {
    let toxics = shared.toxics.read().unwrap_or_else(|p| p.into_inner());
    let list = match direction {
        Direction::Upstream => &toxics.upstream,
        Direction::Downstream => &toxics.downstream,
    };
    list.iter().filter(|s| conn.draw < s.toxicity && s.from.is_none_or(|ip| ip == conn.peer)).map(|s| s.toxic).collect()
}

/// How a pump ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The source closed (or a write failed): an orderly end of this direction.
    Closed,
    /// Reset: the connection is aborted both ways.
    Abort,
}

/// Chunks a pump may hold read but not yet forwarded (a latency's delay line): 1 MiB each way.
const MAX_HELD: usize = 64;

/// A chunk read and waiting to be forwarded.
#[derive(Debug)]
struct Held {
    read_at: tokio::time::Instant,
    /// The jitter drawn for it when it was read.
    jitter: Duration,
    data: Vec<u8>,
}

/// The latency in force: the delay of a chunk from the moment it was read (the longest, when a
/// latency for every connection and one for this connection's address both apply).
fn latency_of(toxics: &[Toxic]) -> Option<Duration> {
    toxics
        .iter()
        .filter_map(|t| match t {
            Toxic::Latency { latency, .. } => Some(*latency),
            _ => None,
        })
        .max()
}

/// Forwards `from` → `to`, applying the toxics of `direction` to every chunk.
///
/// Reading goes on while chunks wait out a latency (up to [`MAX_HELD`] of them): each chunk is
/// forwarded at its own arrival + latency + jitter, in order, so requests pipelined on one
/// connection are each delayed once — not one behind the other, which would also cap the
/// connection at a few chunks a second.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    direction: Direction,
    conn: Conn,
    shared: Arc<Shared>,
) -> End {
    let mut changes = shared.changes.subscribe();
    let mut buf = vec![0u8; CHUNK];
    let mut sent: u64 = 0;
    // The toxics in force, re-read only when the proxy's settings change (not per chunk).
    let mut toxics = active(&shared, direction, conn);
    let mut held: std::collections::VecDeque<Held> = std::collections::VecDeque::new();
    let mut ended = false;
    loop {
        if changes.has_changed().unwrap_or(false) {
            changes.borrow_and_update();
            toxics = active(&shared, direction, conn);
        }
        if shared.down.load(Ordering::SeqCst) || toxics.contains(&Toxic::ResetPeer) {
            abort(&from, &to);
            return End::Abort;
        }
        if ended && held.is_empty() {
            if let Some(Toxic::SlowClose { delay }) = toxics.iter().find(|t| matches!(t, Toxic::SlowClose { .. })) {
                tokio::time::sleep(*delay).await;
            }
            let _ = to.shutdown().await;
            return End::Closed;
        }
        let latency = latency_of(&toxics);
        let due = held.front().map(|h| match latency {
            Some(latency) => h.read_at + latency + h.jitter,
            None => h.read_at,
        });
        tokio::select! {
            read = from.read(&mut buf), if !ended && held.len() < MAX_HELD => {
                match read.unwrap_or(0) {
                    0 => ended = true,
                    n => {
                        let jitter = match toxics.iter().find(|t| matches!(t, Toxic::Latency { .. })) {
                            Some(Toxic::Latency { jitter, .. }) if !jitter.is_zero() => {
                                let us = shared
                                    .rng
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .gen_range(0..=jitter.as_micros() as u64);
                                Duration::from_micros(us)
                            }
                            _ => Duration::ZERO,
                        };
                        held.push_back(Held { read_at: tokio::time::Instant::now(), jitter, data: buf[..n].to_vec() });
                    }
                }
                continue;
            }
            // Its time has come (at once without a latency).
            _ = tokio::time::sleep_until(due.unwrap_or_else(tokio::time::Instant::now)), if due.is_some() => {}
            // A toxic changed: look again (a reset or a down applies to idle connections too).
            _ = changes.changed() => {
                toxics = active(&shared, direction, conn);
                continue;
            }
        }
        let Some(chunk) = held.pop_front() else { continue };
        if toxics.contains(&Toxic::Blackhole) {
            continue; // read and dropped
        }
        let mut data = &chunk.data[..];
        if let Some(Toxic::LimitData { bytes }) = toxics.iter().find(|t| matches!(t, Toxic::LimitData { .. })) {
            let room = bytes.saturating_sub(sent) as usize;
            data = &data[..data.len().min(room)];
        }
        if let Some(Toxic::Bandwidth { bytes_per_s }) = toxics.iter().find(|t| matches!(t, Toxic::Bandwidth { .. })) {
            if *bytes_per_s > 0 {
                tokio::time::sleep(Duration::from_secs_f64(data.len() as f64 / *bytes_per_s as f64)).await;
            }
        }
        let slicer = toxics.iter().find_map(|t| match t {
            Toxic::Slicer { bytes, delay } => Some((*bytes.max(&1), *delay)),
            _ => None,
        });
        let written = match slicer {
            Some((size, delay)) => {
                let mut ok = true;
                for piece in data.chunks(size) {
                    if to.write_all(piece).await.is_err() {
                        ok = false;
                        break;
                    }
                    tokio::time::sleep(delay).await;
                }
                ok
            }
            None => to.write_all(data).await.is_ok(),
        };
        if !written {
            return End::Closed;
        }
        sent += data.len() as u64;
        if let Some(Toxic::LimitData { bytes }) = toxics.iter().find(|t| matches!(t, Toxic::LimitData { .. })) {
            if sent >= *bytes {
                let _ = to.shutdown().await;
                return End::Closed;
            }
        }
    }
}

/// Arms both sockets of the connection to close with a reset (SO_LINGER 0) when their halves
/// drop: the peers see "connection reset", not an orderly end.
fn abort(from: &OwnedReadHalf, to: &OwnedWriteHalf) {
    let _ = from.as_ref().set_zero_linger();
    let _ = to.as_ref().set_zero_linger();
}
