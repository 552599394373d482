//! `flashlab images build`: the testbed's images, made from what this machine has — no registry,
//! no download.
//!
//! Each image holds one component's programs, the shared libraries they load (as `ldd` lists
//! them, the dynamic loader included), CA certificates, `/etc/passwd` and `/etc/group` with the
//! non-root user `flashlab` (uid and gid [`UID`]) that runs it, a writable `/data` (its working
//! directory) and `/tmp`. It is imported with `docker import` from a tar made here, so it needs no
//! base image:
//!
//! | component | image | programs |
//! |---|---|---|
//! | `flashsale` | `flashlab/flashsale` | `flashsale` (gateway, processor, payment, admin) |
//! | `redis` | `flashlab/redis` | `redis-server`, `redis-sentinel`, `redis-cli` |
//! | `broker` | `flashlab/broker` | `tansu` |
//!
//! Each is tagged `VERSION-DIGEST` (the flashlab version and a digest of every file, its path and
//! mode, and the image settings) and `VERSION`. When the `VERSION-DIGEST` tag exists, nothing is
//! built: a second run takes the time to read and digest the files. Earlier `VERSION-*` builds
//! are removed. A deploy's candidate build of `flashsale` gets an image of its own
//! ([`build_candidate`], `flashlab/flashsale-candidate`), which leaves the release's alone.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// The user the components run as in their containers.
pub const UID: u64 = 10_001;
/// Where a component keeps its data (and its working directory).
pub const DATA_DIR: &str = "/data";
/// The tags' first part.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// How long one `docker` command may take (an import of ~100 MB included).
const DOCKER_TIMEOUT: Duration = Duration::from_secs(120);

/// A component of the testbed that runs from an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Component {
    Flashsale,
    Redis,
    Broker,
}

impl Component {
    pub const ALL: [Component; 3] = [Component::Flashsale, Component::Redis, Component::Broker];

    pub fn name(self) -> &'static str {
        match self {
            Component::Flashsale => "flashsale",
            Component::Redis => "redis",
            Component::Broker => "broker",
        }
    }

    pub fn parse(name: &str) -> Option<Component> {
        Component::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The repository of the image flashlab builds.
    pub fn repository(self) -> String {
        format!("flashlab/{}", self.name())
    }

    /// The image flashlab builds, by its version tag.
    pub fn local_image(self) -> String {
        format!("{}:{VERSION}", self.repository())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{0}: not found on PATH (try ci/setup)")]
    NotFound(String),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("ldd {program}: {why}")]
    Ldd { program: String, why: String },
    #[error("docker {args}: {why}")]
    Docker { args: String, why: String },
    #[error("{choice}: not on this machine, and the pull failed (is a registry reachable?): {why}")]
    Pull { choice: String, why: String },
}

/// Where each component's programs come from: this machine's, unless given.
#[derive(Debug, Clone)]
pub struct Sources {
    pub flashsale: PathBuf,
    pub redis_server: PathBuf,
    pub redis_cli: Option<PathBuf>,
    pub tansu: PathBuf,
}

impl Sources {
    /// `flashsale` next to the lab (see [`crate::components::flashsale_program`]), the rest from
    /// `PATH`.
    pub fn from_machine() -> Result<Sources, ImageError> {
        Sources::from_machine_for(&Component::ALL)
    }

    /// [`Sources::from_machine`] for these components only: the programs of the others are
    /// neither looked for nor needed (they run from other images).
    pub fn from_machine_for(components: &[Component]) -> Result<Sources, ImageError> {
        let needed = |c: Component, program: &str| match components.contains(&c) {
            true => on_path(Path::new(program)),
            false => Ok(PathBuf::new()),
        };
        Ok(Sources {
            flashsale: on_path(&crate::components::flashsale_program())?,
            redis_server: needed(Component::Redis, "redis-server")?,
            redis_cli: needed(Component::Redis, "redis-cli").ok().filter(|p| !p.as_os_str().is_empty()),
            tansu: needed(Component::Broker, "tansu")?,
        })
    }
}

/// What [`build`] did for one image.
#[derive(Debug, Clone)]
pub struct Built {
    pub component: Component,
    /// `repository:VERSION-DIGEST`.
    pub image: String,
    /// `false`: the image existed already.
    pub fresh: bool,
    pub bytes: u64,
    pub took: Duration,
}

/// Builds (or finds) every image. See the module docs.
pub fn build(sources: &Sources) -> Result<Vec<Built>, ImageError> {
    build_these(sources, &Component::ALL)
}

/// [`build`] for these components only.
pub fn build_these(sources: &Sources, components: &[Component]) -> Result<Vec<Built>, ImageError> {
    let _lock = build_lock()?;
    components.iter().map(|&c| build_one(c, sources, &c.repository(), true)).collect()
}

/// One build at a time on this machine (held until dropped): two would both import what neither
/// found.
fn build_lock() -> Result<nix::fcntl::Flock<std::fs::File>, ImageError> {
    let path = std::env::temp_dir().join("flashlab-images.lock");
    let io = |source| ImageError::Io { path: path.display().to_string(), source };
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(io)?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| io(std::io::Error::from(e)))
}

/// The repository of the images of deployed builds ([`build_candidate`]).
pub const CANDIDATE_REPOSITORY: &str = "flashlab/flashsale-candidate";

/// Builds (or finds) the image of another build of `flashsale` — a deploy's candidate — as
/// [`build`] makes `flashlab/flashsale`, in [`CANDIDATE_REPOSITORY`] (tagged `VERSION-DIGEST`
/// only): the release's image and its `VERSION` tag are left as they are. Earlier candidates'
/// images go, but for one a container still uses.
pub fn build_candidate(program: &Path) -> Result<Built, ImageError> {
    let sources = Sources {
        flashsale: program.to_path_buf(),
        redis_server: PathBuf::new(),
        redis_cli: None,
        tansu: PathBuf::new(),
    };
    let _lock = build_lock()?;
    build_one(Component::Flashsale, &sources, CANDIDATE_REPOSITORY, false)
}

/// One file of an image: where it goes, its mode, and where its bytes come from.
#[derive(Debug, Clone)]
struct Entry {
    mode: u32,
    bytes: Vec<u8>,
    owner: u64,
    dir: bool,
}

/// Builds `component`'s image in `repository`, tagged `VERSION-DIGEST` and, with `version_tag`,
/// `VERSION` too.
fn build_one(
    component: Component,
    sources: &Sources,
    repository: &str,
    version_tag: bool,
) -> Result<Built, ImageError> {
    let started = Instant::now();
    let (programs, entrypoint): (Vec<(&str, &Path)>, &str) = match component {
        Component::Flashsale => (vec![("/usr/local/bin/flashsale", &sources.flashsale)], "/usr/local/bin/flashsale"),
        Component::Redis => {
            // One binary: redis-server runs as Sentinel when called redis-sentinel.
            let mut p = vec![
                ("/usr/local/bin/redis-server", sources.redis_server.as_path()),
                ("/usr/local/bin/redis-sentinel", sources.redis_server.as_path()),
            ];
            if let Some(cli) = &sources.redis_cli {
                p.push(("/usr/local/bin/redis-cli", cli.as_path()));
            }
            (p, "/usr/local/bin/redis-server")
        }
        Component::Broker => (vec![("/usr/local/bin/tansu", &sources.tansu)], "/usr/local/bin/tansu"),
    };
    let mut files: BTreeMap<String, Entry> = BTreeMap::new();
    for (at, from) in &programs {
        files.insert(at.to_string(), file(from, 0o755)?);
        for lib in shared_libraries(from)? {
            let at = lib.display().to_string();
            files.insert(at, file(&lib, 0o755)?);
        }
    }
    for certs in ["/etc/ssl/certs/ca-certificates.crt"] {
        if Path::new(certs).is_file() {
            files.insert(certs.into(), file(Path::new(certs), 0o644)?);
        }
    }
    let text = |s: String| Entry { mode: 0o644, bytes: s.into_bytes(), owner: 0, dir: false };
    files.insert(
        "/etc/passwd".into(),
        text(format!(
            "root:x:0:0:root:/root:/sbin/nologin\nflashlab:x:{UID}:{UID}:flashlab:{DATA_DIR}:/sbin/nologin\n"
        )),
    );
    files.insert("/etc/group".into(), text(format!("root:x:0:\nflashlab:x:{UID}:\n")));
    files.insert("/etc/nsswitch.conf".into(), text("hosts: files dns\n".into()));
    let dir = |mode, owner| Entry { mode, bytes: Vec::new(), owner, dir: true };
    files.insert(DATA_DIR.into(), dir(0o750, UID));
    files.insert("/tmp".into(), dir(0o1777, 0));

    let changes = vec![
        format!("USER {UID}:{UID}"),
        format!("WORKDIR {DATA_DIR}"),
        format!("ENTRYPOINT [\"{entrypoint}\"]"),
        "ENV PATH=/usr/local/bin".to_string(),
    ];
    let digest = digest(&files, &changes);
    let image = format!("{repository}:{VERSION}-{}", &digest[..12]);
    let fresh = !image_exists(&image)?;
    if fresh {
        let tar = tarball(&files)?;
        let mut args: Vec<String> = vec!["import".into()];
        for c in &changes {
            args.push("--change".into());
            args.push(c.clone());
        }
        args.push("-".into());
        args.push(image.clone());
        docker(&args, Some(&tar))?;
    }
    if version_tag {
        docker(&["tag".into(), image.clone(), format!("{repository}:{VERSION}")], None)?;
    }
    // Earlier builds of this version go (a container still using one keeps it).
    let tags = docker(&["images".into(), repository.to_string(), "--format".into(), "{{.Tag}}".into()], None)?;
    for tag in tags.lines().filter(|t| t.starts_with(&format!("{VERSION}-")) && !image.ends_with(&format!(":{t}"))) {
        let _ = docker(&["rmi".into(), format!("{repository}:{tag}")], None);
    }
    let bytes =
        docker(&["image".into(), "inspect".into(), "--format".into(), "{{.Size}}".into(), image.clone()], None)?
            .trim()
            .parse()
            .unwrap_or(0);
    Ok(Built { component, image, fresh, bytes, took: started.elapsed() })
}

fn file(path: &Path, mode: u32) -> Result<Entry, ImageError> {
    let bytes = std::fs::read(path).map_err(|source| ImageError::Io { path: path.display().to_string(), source })?;
    Ok(Entry { mode, bytes, owner: 0, dir: false })
}

/// The libraries `program` loads, by the paths the loader finds them at (the loader too).
fn shared_libraries(program: &Path) -> Result<Vec<PathBuf>, ImageError> {
    let err = |why: String| ImageError::Ldd { program: program.display().to_string(), why };
    let out = Command::new("ldd").arg(program).output().map_err(|e| err(e.to_string()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // A static binary: ldd says so and exits 1.
        if String::from_utf8_lossy(&out.stderr).contains("not a dynamic executable")
            || text.contains("statically linked")
        {
            return Ok(Vec::new());
        }
        return Err(err(String::from_utf8_lossy(&out.stderr).trim().to_string()));
    }
    parse_ldd(&text).map_err(err)
}

/// The paths in `ldd`'s output; an error names a library it did not find.
fn parse_ldd(text: &str) -> Result<Vec<PathBuf>, String> {
    let mut libs = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.contains("=> not found") {
            return Err(format!("missing library: {line}"));
        }
        let path = match line.split_once("=>") {
            Some((_, right)) => right.trim(),
            None => line,
        };
        let path = path.split(" (").next().unwrap_or("").trim();
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

fn digest(files: &BTreeMap<String, Entry>, changes: &[String]) -> String {
    let mut h = Sha256::new();
    for (at, e) in files {
        h.update(at.as_bytes());
        h.update(e.mode.to_le_bytes());
        h.update(e.owner.to_le_bytes());
        h.update([e.dir as u8]);
        h.update((e.bytes.len() as u64).to_le_bytes());
        h.update(&e.bytes);
    }
    for c in changes {
        h.update(c.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The image's file system as a tar: parent directories first, every entry with its mode and
/// owner, times at 0 (the same files make the same tar).
fn tarball(files: &BTreeMap<String, Entry>) -> Result<Vec<u8>, ImageError> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut dirs = std::collections::BTreeSet::new();
    for at in files.keys() {
        let mut parent = Path::new(at).parent();
        while let Some(p) = parent.filter(|p| *p != Path::new("/")) {
            dirs.insert(p.to_path_buf());
            parent = p.parent();
        }
    }
    let io = |source| ImageError::Io { path: "image tar".into(), source };
    for d in dirs.iter().filter(|d| !files.contains_key(&d.display().to_string())) {
        append(&mut builder, d, &Entry { mode: 0o755, bytes: Vec::new(), owner: 0, dir: true }).map_err(io)?;
    }
    for (at, e) in files {
        append(&mut builder, Path::new(at), e).map_err(io)?;
    }
    builder.into_inner().map_err(io)
}

fn append(builder: &mut tar::Builder<Vec<u8>>, at: &Path, e: &Entry) -> std::io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_mode(e.mode);
    header.set_uid(e.owner);
    header.set_gid(e.owner);
    header.set_mtime(0);
    header.set_entry_type(if e.dir { tar::EntryType::Directory } else { tar::EntryType::Regular });
    header.set_size(if e.dir { 0 } else { e.bytes.len() as u64 });
    let relative = at.strip_prefix("/").unwrap_or(at);
    builder.append_data(&mut header, relative, e.bytes.as_slice())
}

fn image_exists(image: &str) -> Result<bool, ImageError> {
    let args = ["image", "inspect", "--format", "{{.Id}}", image];
    let out = run_bounded(&args.map(String::from), None)?;
    Ok(out.0)
}

/// Runs `docker ARGS` (stdin `input`), bounded by [`DOCKER_TIMEOUT`]; its stdout, or an error
/// with its stderr.
pub fn docker(args: &[String], input: Option<&[u8]>) -> Result<String, ImageError> {
    let (ok, stdout, stderr) = run_bounded(args, input)?;
    if !ok {
        return Err(ImageError::Docker { args: args.join(" "), why: stderr.trim().to_string() });
    }
    Ok(stdout)
}

/// `docker ARGS`'s stdout and stderr together (a container's log is both).
pub fn docker_both(args: &[String]) -> Result<String, ImageError> {
    let (ok, stdout, stderr) = run_bounded(args, None)?;
    if !ok {
        return Err(ImageError::Docker { args: args.join(" "), why: stderr.trim().to_string() });
    }
    Ok(stdout + &stderr)
}

fn run_bounded(args: &[String], input: Option<&[u8]>) -> Result<(bool, String, String), ImageError> {
    let fail = |why: String| ImageError::Docker { args: args.join(" "), why };
    let mut child = Command::new("timeout")
        .arg(DOCKER_TIMEOUT.as_secs().to_string())
        .arg("docker")
        .args(args)
        // The engine itself (the CLI negotiates its version), never the lab's bridge.
        .env("DOCKER_HOST", super::engine_host())
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot run docker: {e} (try ci/setup)")))?;
    if let (Some(bytes), Some(mut stdin)) = (input, child.stdin.take()) {
        // A writer thread: docker reads stdin while it writes its output.
        let bytes = bytes.to_vec();
        let writer = std::thread::spawn(move || stdin.write_all(&bytes));
        let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
        let _ = writer.join();
        return Ok(finish(out));
    }
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    Ok(finish(out))
}

fn finish(out: std::process::Output) -> (bool, String, String) {
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn on_path(program: &Path) -> Result<PathBuf, ImageError> {
    if program.components().count() > 1 {
        return if program.is_file() {
            Ok(program.to_path_buf())
        } else {
            Err(ImageError::NotFound(program.display().to_string()))
        };
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .ok_or_else(|| ImageError::NotFound(program.display().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_every_library_and_the_loader() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibssl.so.3 => /lib/x86_64-linux-gnu/libssl.so.3 (0x00007f)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_ldd(text).unwrap(),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libssl.so.3"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
    }

    #[test]
    fn a_missing_library_is_an_error_naming_it() {
        let err = parse_ldd("\tlibrdkafka.so.1 => not found\n").unwrap_err();
        assert!(err.contains("librdkafka.so.1"), "{err}");
    }

    #[test]
    fn the_digest_changes_with_a_byte_a_mode_or_a_setting() {
        let mut files = BTreeMap::new();
        files.insert("/a".to_string(), Entry { mode: 0o644, bytes: b"x".to_vec(), owner: 0, dir: false });
        let base = digest(&files, &["USER 1".into()]);
        assert_eq!(base, digest(&files, &["USER 1".into()]), "the same files, the same digest");
        assert_ne!(base, digest(&files, &["USER 2".into()]));
        files.get_mut("/a").unwrap().mode = 0o755;
        let moded = digest(&files, &["USER 1".into()]);
        assert_ne!(base, moded);
        files.get_mut("/a").unwrap().bytes = b"y".to_vec();
        assert_ne!(moded, digest(&files, &["USER 1".into()]));
    }

    #[test]
    fn the_tar_has_parents_before_children_with_owners_and_modes() {
        let mut files = BTreeMap::new();
        files
            .insert("/usr/local/bin/x".to_string(), Entry { mode: 0o755, bytes: b"#!".to_vec(), owner: 0, dir: false });
        files.insert("/data".to_string(), Entry { mode: 0o750, bytes: Vec::new(), owner: UID, dir: true });
        let tar = tarball(&files).unwrap();
        let mut archive = tar::Archive::new(tar.as_slice());
        let entries: Vec<(String, u32, u64)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.path().unwrap().display().to_string(), e.header().mode().unwrap(), e.header().uid().unwrap())
            })
            .collect();
        let names: Vec<&str> = entries.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(names, vec!["usr", "usr/local", "usr/local/bin", "data", "usr/local/bin/x"]);
        assert!(entries.contains(&("data".into(), 0o750, UID)));
        assert!(entries.contains(&("usr/local/bin/x".into(), 0o755, 0)));
    }
}
