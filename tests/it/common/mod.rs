//! Test harness shared by every integration test: a real PostgreSQL and a real mailtally.
//!
//! Databases: with `TEST_DATABASE_URL` set, each test gets a fresh database on that server;
//! otherwise one throwaway cluster per build tree is started with the same code as the embedded
//! default (under the system temp dir, so that the `postgres` user can reach it when tests run as
//! root), and each test gets a fresh database in it. Databases are dropped when the test ends.
#![allow(dead_code)]

pub mod api;
pub mod dovecot;
pub mod smtp;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mailtally::store::{Cluster, ClusterOptions};

/// The directory of the shared test cluster of this build tree.
pub fn test_cluster_dir() -> PathBuf {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    env!("CARGO_TARGET_TMPDIR").hash(&mut h);
    std::env::temp_dir().join(format!("mailtally-test-{:016x}", h.finish()))
}

/// Starts (or reuses) the shared test cluster; serialised across test processes with flock.
pub fn shared_cluster() -> Cluster {
    let dir = test_cluster_dir();
    std::fs::create_dir_all(&dir).expect("create test cluster dir");
    // Names the build tree this cluster belongs to, so that scripts/test stops only its own.
    std::fs::write(dir.join("target-tmpdir"), env!("CARGO_TARGET_TMPDIR"))
        .expect("write the cluster's build tree");
    let lock = std::fs::File::create(dir.with_extension("lock")).expect("create lock file");
    let _guard = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("lock test cluster");
    Cluster::ensure_running(&dir.join("pg"), ClusterOptions { durable: false })
        .expect("start the test PostgreSQL cluster")
}

/// Where to create test databases: `TEST_DATABASE_URL`'s server, or the shared cluster.
pub fn admin_url() -> String {
    match std::env::var("TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => shared_cluster().admin_url(),
    }
}

/// Replaces the database name of a `postgresql://` URL.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let path_start = base[scheme_end..]
        .find('/')
        .map(|i| i + scheme_end)
        .unwrap_or(base.len());
    format!("{}/{}{}", &base[..path_start], name, query)
}

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// A fresh database for one test, dropped at the end.
pub struct TestDb {
    pub url: String,
    pub name: String,
    admin_url: String,
}

impl TestDb {
    /// Creates the database (blocking; call it outside or inside a runtime).
    pub fn new() -> TestDb {
        let admin_url = admin_url();
        let name = format!("mt_test_{}", uuid::Uuid::new_v4().simple());
        let url = with_database(&admin_url, &name);
        let (admin, n) = (admin_url.clone(), name.clone());
        std::thread::spawn(move || {
            block_on(async {
                let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
                    .await
                    .expect("connect to the test server");
                tokio::spawn(conn);
                client
                    .batch_execute(&format!("CREATE DATABASE {n}"))
                    .await
                    .expect("create test database");
            })
        })
        .join()
        .unwrap();
        TestDb {
            url,
            name,
            admin_url,
        }
    }

    /// A fresh database with mailtally's migrations applied.
    pub fn migrated() -> TestDb {
        let db = TestDb::new();
        let url = db.url.clone();
        std::thread::spawn(move || {
            block_on(async {
                let pool = mailtally::store::pool(&url, 2).unwrap();
                mailtally::store::migrate(&pool)
                    .await
                    .expect("migrations apply");
            })
        })
        .join()
        .unwrap();
        db
    }

    pub fn pool(&self) -> deadpool_postgres::Pool {
        mailtally::store::pool(&self.url, 8).expect("pool")
    }

    /// A connected client for assertions (the connection task runs on the current runtime).
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .expect("connect to the test database");
        tokio::spawn(conn);
        client
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if std::env::var_os("MAILTALLY_KEEP_TEST_DB").is_some() {
            eprintln!("kept test database {}", self.url);
            return;
        }
        let (admin, name) = (self.admin_url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            block_on(async {
                if let Ok((client, conn)) =
                    tokio_postgres::connect(&admin, tokio_postgres::NoTls).await
                {
                    tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            })
        })
        .join();
    }
}

/// A free loopback TCP port (the listener is closed before the port is used).
/// Gives `message` the tracked links `urls` (indexes 0, 1, ...), stored as the queue stores
/// them: one shared list per distinct set of links.
pub async fn set_links(client: &tokio_postgres::Client, message: uuid::Uuid, urls: &[&str]) {
    let idx: Vec<i32> = (0..urls.len() as i32).collect();
    client
        .execute(
            "WITH list AS (
                 INSERT INTO link_lists (digest, idx, urls)
                 VALUES (mailtally_link_list_digest($2, $3), $2, $3) ON CONFLICT DO NOTHING)
             UPDATE messages SET link_list = mailtally_link_list_digest($2, $3) WHERE id = $1",
            &[&message, &idx, &urls],
        )
        .await
        .unwrap();
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `mailtally serve` process on free ports, with its own data directory.
pub struct Server {
    pub child: Child,
    pub http: SocketAddr,
    pub smtp: SocketAddr,
    pub data_dir: tempfile::TempDir,
    pub env: Vec<(String, String)>,
    pub log: PathBuf,
}

impl Server {
    /// Starts `mailtally serve` against `database_url` with extra settings; waits for /healthz.
    pub fn start(database_url: &str, extra: &[(&str, &str)]) -> Server {
        let data_dir = tempfile::tempdir().unwrap();
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let smtp: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut env: Vec<(String, String)> = vec![
            ("DATABASE_URL".into(), database_url.into()),
            (
                "MAILTALLY_DATA".into(),
                data_dir.path().display().to_string(),
            ),
            ("HTTP_LISTEN".into(), http.to_string()),
            ("SMTP_LISTEN".into(), smtp.to_string()),
            ("PUBLIC_URL".into(), format!("http://{http}")),
            (
                "TRACKING_SECRET".into(),
                "test-secret-0123456789abcdef".into(),
            ),
        ];
        for (k, v) in extra {
            env.retain(|(key, _)| key != k);
            env.push((k.to_string(), v.to_string()));
        }
        let mut server = Server {
            child: spawn_serve(&env, &data_dir.path().join("serve.log")),
            http,
            smtp,
            log: data_dir.path().join("serve.log"),
            data_dir,
            env,
        };
        server.wait_healthy();
        server
    }

    /// Starts the same server again (same ports, data dir and settings) after a stop or kill.
    pub fn restart(&mut self) {
        self.child = spawn_serve(&self.env, &self.log);
        self.wait_healthy();
    }

    pub fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("mailtally exited early ({status}):\n{}", self.log_text());
            }
            if let Ok(resp) = ureq::get(&format!("http://{}/healthz", self.http))
                .timeout(Duration::from_secs(2))
                .call()
            {
                if resp.status() == 200 {
                    return;
                }
            }
            if Instant::now() > deadline {
                panic!("mailtally did not become healthy:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM and wait: the graceful path.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        self.child.wait().unwrap()
    }

    /// SIGKILL: the crash path.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

fn spawn_serve(env: &[(String, String)], log: &Path) -> Child {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_mailtally"))
        .arg("serve")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("LOG_LEVEL", "info,mailtally=debug")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .expect("spawn mailtally serve")
}

/// Runs the mailtally binary with arguments, settings and stdin; returns (status, stdout, stderr).
pub fn mailtally(args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailtally"))
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mailtally");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Reads one SMTP reply (all its lines) from a raw connection.
pub fn read_reply(reader: &mut BufReader<TcpStream>) -> String {
    let mut reply = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        reply.push_str(&line);
        if line.len() < 4 || line.as_bytes()[3] != b'-' {
            break;
        }
    }
    reply
}

/// The secret `Server::start` gives mailtally.
pub const TEST_TRACKING_SECRET: &str = "test-secret-0123456789abcdef";

/// Maps a tracked copy back to what was submitted: each `{public_url}/c/<token>` becomes the URL
/// its token verifies to (panics on a token that does not verify), the pixel is removed, and so
/// are the `List-Unsubscribe` fields mailtally added (their token must be the copy's unsubscribe
/// token). The rewrite promises that this gives the original bytes.
pub fn untrack(copy: &str, public_url: &str) -> String {
    use mailtally::rewrite::{verify, TokenKeys, Verified};
    let keys = TokenKeys::new(TEST_TRACKING_SECRET.as_bytes(), &[]);
    let added = format!("List-Unsubscribe: <{public_url}/u/");
    let copy: &str = &match copy.find(&added) {
        Some(i) => {
            let after = &copy[i + added.len()..];
            let end = after.find('>').expect("the field ends");
            assert!(
                matches!(
                    verify(&keys, &after[..end]),
                    Ok(Verified::Unsubscribe { .. })
                ),
                "List-Unsubscribe carries an unsubscribe token"
            );
            // Line ends as the copy has them (CRLF, or LF in a dump).
            let eol = if after[end + 1..].starts_with("\r\n") {
                "\r\n"
            } else {
                "\n"
            };
            let post = format!("List-Unsubscribe-Post: List-Unsubscribe=One-Click{eol}");
            let rest = &after[end + 1 + eol.len()..];
            assert!(rest.starts_with(&post), "one-click follows: {rest:.80}");
            format!("{}{}", &copy[..i], &rest[post.len()..])
        }
        None => copy.to_string(),
    };
    let pixel = format!("<img src=\"{public_url}/o/");
    let mut without_pixel = String::new();
    let mut rest = copy;
    while let Some(i) = rest.find(&pixel) {
        without_pixel.push_str(&rest[..i]);
        let end = rest[i..].find("/>").expect("pixel tag ends") + 2;
        rest = &rest[i + end..];
    }
    without_pixel.push_str(rest);
    let click = format!("{public_url}/c/");
    let mut out = String::new();
    let mut rest = without_pixel.as_str();
    while let Some(i) = rest.find(&click) {
        out.push_str(&rest[..i]);
        let after = &rest[i + click.len()..];
        let len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            .unwrap_or(after.len());
        match verify(&keys, &after[..len]) {
            Ok(Verified::Click { url, .. }) => out.push_str(&url),
            other => panic!("a tracked link that does not verify: {other:?}"),
        }
        rest = &after[len..];
    }
    out.push_str(rest);
    out
}
