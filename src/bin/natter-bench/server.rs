//! The server under test: a fresh `natter` on a temp database (`--spawn`), or one already
//! running (`--addr`, with `--db` for provisioning and `--server-pid` for CPU and memory).

use natter::password::{self, HashParams};
use natter::store::{Durability, Store};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The password of every bench user.
pub const PASSWORD: &str = "pw";

pub fn email(i: usize) -> String {
    format!("u{i}@bench.natter")
}

pub struct Target {
    pub addr: SocketAddr,
    pub pid: Option<u32>,
    child: Option<Child>,
    dir: Option<PathBuf>,
    /// What started the child, to start it again (`restart`).
    launch: Option<Launch>,
}

struct Launch {
    natter: PathBuf,
    db: PathBuf,
    extra: Vec<String>,
}

impl Target {
    /// Starts `natter` (the binary beside this one) on a fresh temp folder, after
    /// `provision` has prepared its database: `db` when given (kept, and changed by the
    /// run), else a fresh one in the folder.
    pub fn spawn(
        extra: &[String],
        db: Option<&Path>,
        provision: impl FnOnce(&Path) -> Result<(), String>,
    ) -> Result<Target, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let natter = exe.with_file_name("natter");
        let dir = std::env::temp_dir().join(format!(
            "natter-bench-{}-{}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
        ));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let db = db.map_or_else(|| dir.join("natter.db"), Path::to_path_buf);
        provision(&db)?;
        let launch = Launch { natter, db, extra: extra.to_vec() };
        let (child, addr) = launch.start(&dir, "127.0.0.1:0")?;
        Ok(Target { addr, pid: Some(child.id()), child: Some(child), dir: Some(dir), launch: Some(launch) })
    }

    pub fn attach(addr: SocketAddr, pid: Option<u32>) -> Target {
        Target { addr, pid, child: None, dir: None, launch: None }
    }

    /// Stops the spawned server with SIGTERM (it commits and exits), then starts it again on
    /// the same address and database; returns how long the new one took to listen.
    pub fn restart(&mut self) -> Result<Duration, String> {
        let (Some(launch), Some(dir)) = (&self.launch, &self.dir) else {
            return Err("restart needs a server started by --spawn".into());
        };
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let _ = c.wait();
        }
        let t0 = std::time::Instant::now();
        let (child, addr) = launch.start(dir, &self.addr.to_string())?;
        let took = t0.elapsed();
        self.pid = Some(child.id());
        self.child = Some(child);
        self.addr = addr;
        Ok(took)
    }
}

impl Launch {
    /// Starts the server listening on `listen`; returns it once it said where it listens.
    fn start(&self, dir: &Path, listen: &str) -> Result<(Child, SocketAddr), String> {
        let mut child = Command::new(&self.natter)
            .args(["--listen", listen, "--log-level", "info", "--db"])
            .arg(&self.db)
            .arg("--mail-outbox")
            .arg(dir.join("outbox"))
            // Every simulated client comes from 127.0.0.1; the per-address caps are for
            // real deployments (a server attached with --addr keeps its own settings).
            .args(["--max-connections-per-ip", "1000000", "--max-anonymous-per-ip", "1000000"])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.natter.display()))?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(i) = line.find("listening on tcp=") {
                    let addr = line[i + 17..].split_whitespace().next().unwrap_or("").to_owned();
                    let _ = tx.send(addr);
                } else if line.contains("ERROR") || line.contains("WARN") {
                    eprintln!("natter: {line}");
                }
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(60)).map_err(|_| "natter did not start".to_owned())?;
        let addr = addr.parse().map_err(|e| format!("bad address {addr}: {e}"))?;
        Ok((child, addr))
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let _ = c.wait();
        }
        if let Some(d) = self.dir.take() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Makes sure users `0..n` exist in the database at `db` with password [`PASSWORD`].
pub fn provision(db: &Path, n: usize, params: HashParams) -> Result<(), String> {
    provision_range(db, 0..n, params)
}

/// Makes sure the users in `range` exist with password [`PASSWORD`], hashed once with
/// `params` (every user shares the hash: provisioning stays fast, and a login still pays
/// the full argon2id cost).
pub fn provision_range(db: &Path, range: std::ops::Range<usize>, params: HashParams) -> Result<(), String> {
    let mut store = Store::open(db, Durability::Normal, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    let hash = password::hash(params, &password::md5_hex(PASSWORD)).map_err(|e| e.to_string())?;
    for i in range {
        let e = email(i);
        if store.user_by_email(&e).map_err(|e| e.to_string())?.is_none() {
            store.insert_user(&e, &format!("u{i}"), &hash, 0).map_err(|e| e.to_string())?;
        }
        if i % 1000 == 999 {
            store.commit().map_err(|e| e.to_string())?;
        }
    }
    store.commit().map_err(|e| e.to_string())
}

/// The account id of bench user `i`.
pub fn user_id(store: &Store, i: usize) -> Result<i64, String> {
    let u = store.user_by_email(&email(i)).map_err(|e| e.to_string())?;
    Ok(u.ok_or(format!("no user {i}"))?.id)
}

/// Puts users `members` (indexes) into `count` more groups each (every one of them in all
/// of those groups), through the store: the groups a member already belongs to when a
/// workload starts.
pub fn make_groups(db: &Path, members: std::ops::Range<usize>, count: usize) -> Result<(), String> {
    if count == 0 {
        return Ok(());
    }
    let mut store = Store::open(db, Durability::Normal, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    let ids = members.map(|i| user_id(&store, i)).collect::<Result<Vec<_>, _>>()?;
    let owner = *ids.first().ok_or("no members")?;
    for g in 0..count {
        let group = store.create_group(&format!("extra {g}"), owner, 0).map_err(|e| e.to_string())?;
        for &u in &ids {
            store.add_group_member(group, u, 0, 1).map_err(|e| e.to_string())?;
        }
        store.commit().map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Makes each pair of users (indexes) contacts, both directions of the friends list.
pub fn make_contacts(db: &Path, pairs: &[(usize, usize)]) -> Result<(), String> {
    if pairs.is_empty() {
        return Ok(());
    }
    let mut store = Store::open(db, Durability::Normal, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    let mut ids = std::collections::HashMap::new();
    for (n, &(a, b)) in pairs.iter().enumerate() {
        let mut id = |i: usize| -> Result<i64, String> {
            if let Some(&id) = ids.get(&i) {
                return Ok(id);
            }
            let u = user_id(&store, i)?;
            ids.insert(i, u);
            Ok(u)
        };
        let (a, b) = (id(a)?, id(b)?);
        store.add_contact(a, b, 1).map_err(|e| e.to_string())?;
        if n % 10_000 == 9_999 {
            store.commit().map_err(|e| e.to_string())?;
        }
    }
    store.commit().map_err(|e| e.to_string())
}

/// A fresh self-signed ECDSA P-256 certificate for 127.0.0.1 and localhost, made with
/// openssl in a temp folder (left for the OS to clean: it holds two small files); returns
/// the certificate and key files.
pub fn make_certificate() -> Result<(PathBuf, PathBuf), String> {
    let dir = std::env::temp_dir().join(format!("natter-bench-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
        .args(["-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .map_err(|e| format!("--tls makes a certificate with openssl, which did not run: {e}"))?;
    if !out.status.success() {
        return Err(format!("openssl req failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok((cert, key))
}
