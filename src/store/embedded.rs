//! The embedded default: a private PostgreSQL cluster under `$MAILTALLY_DATA/pg`, run with the
//! host's server binaries. It listens on a unix socket inside its own directory only (or, when
//! that path is too long for a socket, on loopback with a password), so nothing else on the host
//! can reach it. When mailtally runs as root the cluster runs as the `postgres` system user,
//! because `initdb` and `postgres` refuse to run as root.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use thiserror::Error;

/// A socket path must fit in `sun_path` (108 bytes on Linux) with `/.s.PGSQL.NNNNN` appended.
const MAX_SOCKET_DIR_LEN: usize = 90;
const SUPERUSER: &str = "mailtally";
const DATABASE: &str = "mailtally";

#[derive(Debug, Error)]
pub enum ClusterError {
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or under \
         /usr/lib/postgresql/*/bin; install them (Debian: apt-get install postgresql) \
         or set DATABASE_URL"
    )]
    MissingBinaries,
    #[error(
        "mailtally runs as root and PostgreSQL refuses to: it runs the cluster as the `postgres` \
         system user, which does not exist (Debian: apt-get install postgresql creates it)"
    )]
    NoPostgresUser,
    #[error(
        "the `postgres` system user cannot reach {0}; set MAILTALLY_DATA to a directory it can \
         traverse (e.g. /var/lib/mailtally) or run mailtally as a non-root user"
    )]
    Unreachable(PathBuf),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{command} failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ClusterError {
    let what = what.into();
    move |source| ClusterError::Io { what, source }
}

/// Options for a cluster; tests trade durability for speed.
#[derive(Debug, Clone, Copy)]
pub struct ClusterOptions {
    /// `fsync` on: production. Off: throwaway test clusters.
    pub durable: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions { durable: true }
    }
}

/// The account the server processes run as.
#[derive(Debug, Clone, Copy)]
struct RunAs {
    uid: u32,
    gid: u32,
}

/// A private PostgreSQL cluster in one directory.
#[derive(Debug)]
pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    run_as: Option<RunAs>,
    /// Unix socket directory, or `None` when the cluster listens on loopback.
    socket_dir: Option<PathBuf>,
    port: u16,
    password: Option<String>,
    /// Held while this process owns the cluster: the owner stops it on shutdown. A process
    /// that finds the lock taken (a running `serve` of the same data directory) is a guest.
    owner_lock: Option<nix::fcntl::Flock<fs::File>>,
}

impl Cluster {
    /// Creates the cluster in `dir` when it does not exist yet, starts it unless it already
    /// runs (a second start reuses it), and makes sure the `mailtally` database exists.
    pub fn ensure_running(dir: &Path, options: ClusterOptions) -> Result<Cluster, ClusterError> {
        let bin = find_binaries().ok_or(ClusterError::MissingBinaries)?;
        let run_as = run_as()?;
        fs::create_dir_all(dir).map_err(io(format!("cannot create {}", dir.display())))?;
        let dir = dir
            .canonicalize()
            .map_err(io(format!("cannot resolve {}", dir.display())))?;
        if run_as.is_some() {
            check_traversable(&dir)?;
        }
        let data = dir.join("data");
        let sock = dir.join("sock");
        let use_socket = sock.as_os_str().len() <= MAX_SOCKET_DIR_LEN;
        let mut cluster = Cluster {
            dir: dir.clone(),
            bin,
            run_as,
            socket_dir: use_socket.then(|| sock.clone()),
            port: 5432,
            password: None,
            owner_lock: None,
        };
        if !data.join("PG_VERSION").exists() {
            cluster.init(&data, options)?;
        }
        cluster.read_connection_facts()?;
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("owner.lock"))
            .map_err(io("cannot open the cluster's owner lock"))?;
        // Whoever holds the lock owns the server; a server left running by a killed owner is
        // adopted by the next process that gets the lock.
        cluster.owner_lock =
            nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock).ok();
        if !cluster.is_running() {
            cluster.start()?;
        }
        Ok(cluster)
    }

    fn chown(&self, path: &Path) -> Result<(), ClusterError> {
        if let Some(r) = self.run_as {
            nix::unistd::chown(
                path,
                Some(nix::unistd::Uid::from_raw(r.uid)),
                Some(nix::unistd::Gid::from_raw(r.gid)),
            )
            .map_err(|e| ClusterError::Io {
                what: format!("cannot chown {}", path.display()),
                source: e.into(),
            })?;
        }
        Ok(())
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        if let Some(r) = self.run_as {
            cmd.uid(r.uid).gid(r.gid);
            // HOME of root is not readable by postgres; psqlrc and friends are not needed.
            cmd.env("HOME", &self.dir);
        }
        cmd.current_dir(&self.dir);
        cmd.env_remove("PGDATA")
            .env_remove("PGHOST")
            .env_remove("PGPORT");
        cmd
    }

    fn run(&self, mut cmd: Command, name: &str) -> Result<Output, ClusterError> {
        let out = cmd.output().map_err(io(format!("cannot run {name}")))?;
        if !out.status.success() {
            return Err(ClusterError::Command {
                command: name.to_string(),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string()
                    + &String::from_utf8_lossy(&out.stdout)
                        .trim()
                        .chars()
                        .take(2000)
                        .collect::<String>(),
            });
        }
        Ok(out)
    }

    fn init(&mut self, data: &Path, options: ClusterOptions) -> Result<(), ClusterError> {
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700))
            .map_err(io("cannot restrict the cluster directory"))?;
        self.chown(&self.dir)?;
        let mut args: Vec<String> = vec![
            "-D".into(),
            data.display().to_string(),
            "-U".into(),
            SUPERUSER.into(),
            "-E".into(),
            "UTF8".into(),
            "--locale=C".into(),
            "--auth-local=trust".into(),
            "--auth-host=scram-sha-256".into(),
        ];
        if self.socket_dir.is_none() {
            // Loopback TCP: anyone on the host could connect, so a password is required.
            let password = random_password();
            let pwfile = self.dir.join("pwfile");
            write_private(&pwfile, password.as_bytes())?;
            self.chown(&pwfile)?;
            args.push(format!("--pwfile={}", pwfile.display()));
            self.password = Some(password);
            self.port = free_port()?;
        }
        let mut cmd = self.command("initdb");
        cmd.args(&args);
        self.run(cmd, "initdb")?;
        let _ = fs::remove_file(self.dir.join("pwfile"));

        let mut conf = String::from("\n# written by mailtally\n");
        match &self.socket_dir {
            Some(sock) => {
                fs::create_dir_all(sock).map_err(io("cannot create the socket directory"))?;
                self.chown(sock)?;
                conf += "listen_addresses = ''\n";
                conf += &format!("unix_socket_directories = '{}'\n", sock.display());
            }
            None => {
                conf += "listen_addresses = '127.0.0.1'\n";
                conf += "unix_socket_directories = ''\n";
            }
        }
        conf += &format!("port = {}\n", self.port);
        conf += "max_connections = 200\nshared_buffers = 128MB\n";
        if !options.durable {
            conf += "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n";
        }
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .map_err(io("cannot open postgresql.conf"))?;
        f.write_all(conf.as_bytes())
            .map_err(io("cannot write postgresql.conf"))?;
        // What a client needs to connect, kept next to the cluster for later starts.
        let facts = format!(
            "port={}\nsocket={}\npassword={}\n",
            self.port,
            self.socket_dir
                .as_ref()
                .map(|s| s.display().to_string())
                .unwrap_or_default(),
            self.password.clone().unwrap_or_default()
        );
        write_private(&self.dir.join("connection"), facts.as_bytes())?;
        Ok(())
    }

    fn read_connection_facts(&mut self) -> Result<(), ClusterError> {
        let text = fs::read_to_string(self.dir.join("connection"))
            .map_err(io("cannot read the cluster's connection file"))?;
        for line in text.lines() {
            match line.split_once('=') {
                Some(("port", v)) => self.port = v.parse().unwrap_or(5432),
                Some(("socket", v)) => {
                    self.socket_dir = (!v.is_empty()).then(|| PathBuf::from(v));
                }
                Some(("password", v)) => self.password = (!v.is_empty()).then(|| v.to_string()),
                _ => {}
            }
        }
        Ok(())
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Whether a server runs on this cluster's data directory right now.
    pub fn is_running(&self) -> bool {
        let mut cmd = self.command("pg_ctl");
        cmd.arg("status").arg("-D").arg(self.data());
        matches!(cmd.output(), Ok(o) if o.status.success())
    }

    fn start(&mut self) -> Result<(), ClusterError> {
        // pg_ctl itself discards a postmaster.pid whose process is gone (a killed run).
        let log = self.dir.join("postgresql.log");
        let mut cmd = self.command("pg_ctl");
        cmd.arg("start")
            .arg("-w")
            .arg("-t")
            .arg("60")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(&log)
            // Detach the server from mailtally's process group: a Ctrl-C in the terminal
            // reaches mailtally, which stops the cluster in order.
            .process_group(0);
        match self.run(cmd, "pg_ctl start") {
            Ok(_) => Ok(()),
            Err(ClusterError::Command {
                command,
                status,
                stderr,
            }) => {
                let tail = fs::read_to_string(&log)
                    .map(|l| {
                        l.lines()
                            .rev()
                            .take(8)
                            .collect::<Vec<_>>()
                            .into_iter()
                            .rev()
                            .collect::<Vec<_>>()
                            .join("\n")
                    })
                    .unwrap_or_default();
                Err(ClusterError::Command {
                    command,
                    status,
                    stderr: format!("{stderr}\n{tail}"),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Stops the server (fast shutdown: sessions are cut, committed data is kept).
    pub fn stop(&self) -> Result<(), ClusterError> {
        let mut cmd = self.command("pg_ctl");
        cmd.arg("stop")
            .arg("-w")
            .arg("-m")
            .arg("fast")
            .arg("-D")
            .arg(self.data());
        self.run(cmd, "pg_ctl stop").map(|_| ())
    }

    /// Stops the server when this process owns it; a guest leaves it to its owner.
    pub fn stop_if_owner(&self) -> Result<(), ClusterError> {
        if self.is_owner() {
            self.stop()
        } else {
            Ok(())
        }
    }

    /// Whether this process owns the cluster (and stops it on graceful shutdown).
    pub fn is_owner(&self) -> bool {
        self.owner_lock.is_some()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A connection URL for `database`.
    pub fn url(&self, database: &str) -> String {
        match (&self.socket_dir, &self.password) {
            (Some(sock), _) => format!(
                "postgresql://{SUPERUSER}@{}:{}/{database}",
                percent_encode_path(&sock.display().to_string()),
                self.port
            ),
            (None, Some(pw)) => format!(
                "postgresql://{SUPERUSER}:{pw}@127.0.0.1:{}/{database}",
                self.port
            ),
            (None, None) => format!(
                "postgresql://{SUPERUSER}@127.0.0.1:{}/{database}",
                self.port
            ),
        }
    }

    /// The URL of mailtally's own database in this cluster.
    pub fn database_url(&self) -> String {
        self.url(DATABASE)
    }

    /// The URL of the maintenance database, for creating others.
    pub fn admin_url(&self) -> String {
        self.url("postgres")
    }

    pub fn database_name() -> &'static str {
        DATABASE
    }
}

/// Unix socket directories go in the host part of a URL, percent-encoded.
fn percent_encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len() * 3);
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn find_binaries() -> Option<PathBuf> {
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
                return Some(dir);
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()).then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn run_as() -> Result<Option<RunAs>, ClusterError> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let user = nix::unistd::User::from_name("postgres")
        .ok()
        .flatten()
        .ok_or(ClusterError::NoPostgresUser)?;
    Ok(Some(RunAs {
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
    }))
}

/// Every ancestor of `dir` must let "others" traverse it, since the cluster runs as `postgres`.
fn check_traversable(dir: &Path) -> Result<(), ClusterError> {
    for ancestor in dir.ancestors().skip(1) {
        let meta =
            fs::metadata(ancestor).map_err(io(format!("cannot stat {}", ancestor.display())))?;
        if meta.permissions().mode() & 0o001 == 0 {
            return Err(ClusterError::Unreachable(dir.to_owned()));
        }
    }
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), ClusterError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(io(format!("cannot write {}", path.display())))?;
    f.write_all(bytes)
        .map_err(io(format!("cannot write {}", path.display())))
}

fn random_password() -> String {
    use rand::Rng;
    let bytes: [u8; 24] = rand::thread_rng().gen();
    hex::encode(bytes)
}

fn free_port() -> Result<u16, ClusterError> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(io("cannot find a free port"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(io("cannot find a free port"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_urls_are_percent_encoded() {
        assert_eq!(
            percent_encode_path("/tmp/a b/sock"),
            "%2Ftmp%2Fa%20b%2Fsock"
        );
    }
}
