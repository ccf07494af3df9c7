//! The command line as a user runs it: `user add`, `migrate`, `serve` with the embedded cluster.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::{mailtally, TestDb};
use mailtally::accounts;

#[tokio::test]
async fn user_add_creates_a_user_whose_password_verifies_and_whose_token_authenticates() {
    let db = TestDb::migrated();
    let env = [("DATABASE_URL", db.url.as_str()), ("LOG_LEVEL", "warn")];
    let (ok, out, err) = mailtally(
        &[
            "user",
            "add",
            "--email",
            "Ann@Example.com",
            "--password-stdin",
            "--team",
            "sales",
        ],
        &env,
        b"s3cret-pass\n",
    );
    assert!(ok, "user add failed: {err}");
    let token = out
        .lines()
        .find_map(|l| l.strip_prefix("API token (shown once): "))
        .expect("token printed")
        .to_string();

    let client = db.client().await;
    let user = accounts::authenticate_password(&client, "ann@example.com", "s3cret-pass")
        .await
        .unwrap()
        .expect("password verifies, e-mail compared case-insensitively");
    assert_eq!(user.email, "Ann@Example.com");
    assert!(user.team_id.is_some());
    assert_eq!(user.role, accounts::Role::Member);
    assert!(
        accounts::authenticate_password(&client, "ann@example.com", "s3cret-pasS")
            .await
            .unwrap()
            .is_none()
    );
    let by_token = accounts::authenticate_token(&client, &token)
        .await
        .unwrap()
        .expect("token authenticates");
    assert_eq!(by_token.id, user.id);
    assert!(accounts::authenticate_token(&client, &format!("{token}x"))
        .await
        .unwrap()
        .is_none());
    // The token itself is never stored.
    let stored: i64 = client
        .query_one(
            "SELECT count(*) FROM api_tokens WHERE token_hash = convert_to($1, 'UTF8')",
            &[&token],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 0);

    // A second user with the same address is a clear error.
    let (ok, _, err) = mailtally(
        &[
            "user",
            "add",
            "--email",
            "ann@example.com",
            "--password-stdin",
            "--admin",
        ],
        &env,
        b"another-pass\n",
    );
    assert!(!ok);
    assert!(err.contains("already exists"), "{err}");
}

#[test]
fn settings_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mailtally.toml");
    std::fs::write(&file, "SMTP_LISTN = \"127.0.0.1:1\"\n").unwrap();
    let (ok, _, err) = mailtally(&["--config", file.to_str().unwrap(), "migrate"], &[], b"");
    assert!(!ok);
    assert!(err.contains("unknown key `SMTP_LISTN`"), "{err}");

    let (ok, out, _) = mailtally(&["--help"], &[], b"");
    assert!(ok);
    for key in [
        "DATABASE_URL",
        "MAILTALLY_DATA",
        "SMTP_LISTEN",
        "PUBLIC_URL",
        "UPSTREAM_URL",
        "TRACKING_SECRET",
    ] {
        assert!(out.contains(key), "--help lists {key}");
    }
}

#[test]
fn serve_runs_the_embedded_cluster_and_reuses_it_after_a_restart() {
    let home = tempfile::tempdir().unwrap();
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = home.path().join("var");
    let port = common::free_port().to_string();
    let http = format!("127.0.0.1:{port}");
    let env = [
        ("MAILTALLY_DATA", data.to_str().unwrap()),
        ("HTTP_LISTEN", http.as_str()),
        ("SMTP_LISTEN", "127.0.0.1:0"),
    ];
    let spawn = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_mailtally"))
            .arg("serve")
            .envs(env.iter().copied())
            .env_remove("DATABASE_URL")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let healthy = || {
        for _ in 0..600 {
            if let Ok(r) = ureq::get(&format!("http://{http}/healthz"))
                .timeout(Duration::from_secs(2))
                .call()
            {
                let body: serde_json::Value = r.into_json().unwrap();
                assert_eq!(body["database"], "ok");
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("serve did not become healthy");
    };
    let term = |child: &mut std::process::Child| {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        assert!(child.wait().unwrap().success(), "graceful shutdown exits 0");
    };
    let pg_running = || data.join("pg/data/postmaster.pid").exists();

    let mut first = spawn();
    healthy();
    assert!(pg_running());
    term(&mut first);
    let mut stdout = String::new();
    std::io::Read::read_to_string(first.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    assert!(stdout.contains("first user created"), "{stdout}");
    assert!(stdout.contains("swaks --server"), "{stdout}");
    assert!(
        !pg_running(),
        "the cluster it started is stopped on graceful shutdown"
    );

    // Second start: same cluster, same data (no second first user), killed hard this time.
    let mut second = spawn();
    healthy();
    second.kill().unwrap();
    second.wait().unwrap();
    let mut stdout = String::new();
    std::io::Read::read_to_string(second.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    assert!(
        !stdout.contains("first user created"),
        "data kept across restarts"
    );

    // After a kill the cluster is still running (or has a stale pid file); a new start works.
    let mut third = spawn();
    healthy();
    term(&mut third);
    assert!(!pg_running());
}

#[test]
fn rewrite_prints_the_copy_one_recipient_would_get() {
    // Long enough not to draw the short-secret warning: this run must print no WARN at all.
    const SECRET: &str = "cli-secret-0123456789abcdef0123456";
    let message = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: Hi\r\nX-Mailtally-Template: hello\r\n\
Content-Type: text/html; charset=utf-8\r\n\r\n<html><body><p>See <a href=\"https://example.com/x?a=1&amp;b=2\">this</a></p></body></html>\r\n";
    // With the secret given, no database is needed: an unreachable one is never tried, and
    // no embedded cluster is made.
    let home = tempfile::tempdir().unwrap();
    let data = home.path().join("var");
    let (ok, out, err) = mailtally(
        &["rewrite", "--recipient", "b@example.com"],
        &[
            ("TRACKING_SECRET", SECRET),
            ("PUBLIC_URL", "https://t.example.net"),
            ("DATABASE_URL", "postgresql://mailtally@127.0.0.1:1/none"),
            ("MAILTALLY_DATA", data.to_str().unwrap()),
        ],
        message,
    );
    assert!(ok, "{err}");
    assert!(!data.exists(), "rewrite made a data directory");
    assert!(!err.contains("WARN"), "{err}");
    assert!(
        !out.contains("X-Mailtally-Template"),
        "control headers never leave: {out}"
    );
    let token = out
        .split("https://t.example.net/c/")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a tracked link");
    let keys = mailtally::rewrite::TokenKeys::new(SECRET.as_bytes(), &[]);
    match mailtally::rewrite::verify(&keys, token).unwrap() {
        mailtally::rewrite::Verified::Click { url, link, .. } => {
            assert_eq!(url, "https://example.com/x?a=1&b=2");
            assert_eq!(link, 0);
        }
        other => panic!("not a click token: {other:?}"),
    }
    assert!(out.contains("https://t.example.net/o/"), "the pixel");
}

/// A data directory the embedded cluster may use (as root it runs as `postgres`, which must
/// traverse the path).
fn data_home() -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    home
}

#[test]
fn every_setting_is_checked_before_anything_starts() {
    let home = data_home();
    let data = home.path().join("var");
    let data_str = data.to_str().unwrap().to_string();
    let missing = home.path().join("no-such.pem");
    let missing = missing.to_str().unwrap();
    // A file that can be read but holds no certificate, key or address.
    let junk = home.path().join("junk.txt");
    std::fs::write(&junk, "junk\n").unwrap();
    let junk = junk.to_str().unwrap();
    // (settings, the key the error names, a word of what is allowed)
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: &[Case] = &[
        (&[("UPSTREAM_URL", "ftp://x")], "UPSTREAM_URL", "smtp"),
        (
            &[("UPSTREAM_URL", "smtp://user:hunter2@")],
            "UPSTREAM_URL",
            "no host",
        ),
        (
            &[("UPSTREAM_URL", "smtp://h:99999")],
            "UPSTREAM_URL",
            "not a port",
        ),
        // Characters the SMTP client's URL parser refuses, found before PostgreSQL starts
        // rather than when delivery does.
        (
            &[("UPSTREAM_URL", "smtp://mail|relay.example.com:587")],
            "UPSTREAM_URL",
            "cannot be read",
        ),
        (
            &[("UPSTREAM_URL", "smtp://user:%ff%fe@mx.example.com:587")],
            "UPSTREAM_URL",
            "cannot be read",
        ),
        (
            &[("PUBLIC_URL", "ftp://t.example.com")],
            "PUBLIC_URL",
            "https://",
        ),
        (
            &[("PUBLIC_URL", "https://t.example.com/?a=1")],
            "PUBLIC_URL",
            "no query",
        ),
        (
            &[("DATABASE_URL", "postgresql://u:pw@h:notaport/db")],
            "DATABASE_URL",
            "postgresql://",
        ),
        // libpq's other spellings of a password: a key=value string and a URL parameter.
        (
            &[(
                "DATABASE_URL",
                "host=/tmp user=u password=hunter2 port=notaport",
            )],
            "DATABASE_URL",
            "postgresql://",
        ),
        (
            &[(
                "DATABASE_URL",
                "postgresql://u@h/db?password=hunter2&port=notaport",
            )],
            "DATABASE_URL",
            "postgresql://",
        ),
        (
            &[("TLS_CERT", missing), ("TLS_KEY", missing)],
            "TLS_CERT",
            "cannot be read",
        ),
        (
            &[("TLS_CERT", junk), ("TLS_KEY", junk)],
            "TLS_CERT",
            "no PEM certificate",
        ),
        (
            &[("APPLE_MPP_CIDRS", junk)],
            "APPLE_MPP_CIDRS",
            "not an address",
        ),
        (
            &[
                ("DKIM_DOMAIN", "example.com"),
                ("DKIM_SELECTOR", "s1"),
                ("DKIM_KEY", missing),
            ],
            "DKIM_KEY",
            "cannot be read",
        ),
        (
            &[("DKIM_DOMAIN", "example.com")],
            "DKIM_SELECTOR",
            "set together",
        ),
        (
            &[("DKIM_DOMAIN", "exa mple.com"), ("DKIM_SELECTOR", "s1")],
            "DKIM_DOMAIN",
            "DNS name",
        ),
        (
            &[("SUBMIT_TRUSTED_NETWORKS", "10.0.0.0/8,10.0.0.0/40")],
            "SUBMIT_TRUSTED_NETWORKS",
            "prefix",
        ),
        (
            &[("TRUSTED_PROXIES", "proxy.local")],
            "TRUSTED_PROXIES",
            "not an address",
        ),
        (
            &[("DEFAULT_TRACK", "sometimes")],
            "DEFAULT_TRACK",
            "opens,clicks",
        ),
        (
            &[("LOG_LEVEL", "info,mailtally=loud")],
            "LOG_LEVEL",
            "tracing filter",
        ),
        (&[("LOG_FORMAT", "xml")], "LOG_FORMAT", "human or json"),
        (
            &[("SMTP_LISTEN", "localhost")],
            "SMTP_LISTEN",
            "127.0.0.1:2525",
        ),
        (
            &[("DELIVERY_WORKERS", "0")],
            "DELIVERY_WORKERS",
            "at least 1",
        ),
        (&[("MAX_RECIPIENTS", "0")], "MAX_RECIPIENTS", "at least 1"),
    ];
    for (settings, key, allowed) in cases {
        let mut env: Vec<(&str, &str)> = vec![
            ("MAILTALLY_DATA", data_str.as_str()),
            ("DATABASE_URL", ""),
            ("HTTP_LISTEN", "127.0.0.1:0"),
            ("SMTP_LISTEN", "127.0.0.1:0"),
        ];
        env.retain(|(k, _)| !settings.iter().any(|(s, _)| s == k));
        env.extend(settings.iter().copied());
        let started = std::time::Instant::now();
        let (ok, out, err) = mailtally(&["serve"], &env, b"");
        assert!(!ok, "{settings:?} accepted: {out}{err}");
        assert!(
            err.contains(key) && err.contains(allowed),
            "{settings:?}: {err}"
        );
        assert!(
            !err.contains("hunter2"),
            "a password is never echoed: {err}"
        );
        assert!(
            !data.join("pg").exists(),
            "{settings:?}: PostgreSQL was started before the settings were checked: {err}"
        );
        assert!(!err.contains("PostgreSQL"), "{settings:?}: {err}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}

#[test]
fn misspelt_and_unknown_variables_get_a_warning_naming_the_likely_key() {
    let message = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: Hi\r\n\r\nHello\r\n";
    let (ok, _, err) = mailtally(
        &["rewrite"],
        &[
            ("TRACKING_SECRET", "cli-secret"),
            ("UPSTREAM_ULR", "smtp://mail.example.com:587"),
            ("PUBLIC_URI", "https://t.example.net"),
            ("public_url", "https://t.example.net"),
            ("MAILTALLY_DATADIR", "/srv/mailtally"),
        ],
        message,
    );
    assert!(ok, "{err}");
    for (variable, likely) in [
        ("UPSTREAM_ULR", Some("UPSTREAM_URL")),
        ("PUBLIC_URI", Some("PUBLIC_URL")),
        ("public_url", Some("PUBLIC_URL")),
        ("MAILTALLY_DATADIR", None),
    ] {
        let line = err
            .lines()
            .find(|l| l.contains(&format!("environment variable {variable} ")))
            .unwrap_or_else(|| panic!("no warning for {variable}: {err}"));
        assert!(line.contains("WARN"), "{line}");
        if let Some(key) = likely {
            assert!(line.contains(&format!("did you mean {key}?")), "{line}");
        }
    }
    // Variables of other programs are left alone.
    assert!(!err.contains("environment variable PATH"), "{err}");
    assert!(!err.contains("environment variable HOME"), "{err}");
    // A short tracking secret is named as one that lets links be forged.
    assert!(
        err.lines()
            .any(|l| l.contains("WARN") && l.contains("TRACKING_SECRET has fewer than 32")),
        "{err}"
    );
    let long = "0123456789abcdef0123456789abcdef";
    let (ok, _, err) = mailtally(&["rewrite"], &[("TRACKING_SECRET", long)], message);
    assert!(ok, "{err}");
    assert!(!err.contains("TRACKING_SECRET has fewer"), "{err}");
}

#[test]
fn a_broken_config_file_prints_its_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mailtally.toml");
    std::fs::write(&file, "SMTP_LISTEN = \"127.0.0.1:2525\nPUBLIC_URL = 3\n").unwrap();
    let (ok, _, err) = mailtally(&["--config", file.to_str().unwrap(), "migrate"], &[], b"");
    assert!(!ok);
    assert!(err.contains("is not valid TOML"), "{err}");
    assert_eq!(err.matches("TOML parse error").count(), 1, "{err}");

    std::fs::write(&file, "UPSTREAM_ULR = \"smtp://h\"\n").unwrap();
    let (ok, _, err) = mailtally(&["--config", file.to_str().unwrap(), "migrate"], &[], b"");
    assert!(!ok);
    assert!(
        err.contains("unknown key `UPSTREAM_ULR` (did you mean `UPSTREAM_URL`?)"),
        "{err}"
    );
    assert_eq!(err.matches("UPSTREAM_ULR").count(), 1, "{err}");
}

#[test]
fn migrate_and_rewrite_are_quiet_and_say_what_they_did_or_need() {
    let home = data_home();
    let data = home.path().join("var");
    let data = data.to_str().unwrap();
    let env = [("MAILTALLY_DATA", data), ("DATABASE_URL", "")];
    let noise = |err: &str| {
        err.lines()
            .filter(|l| {
                l.contains("WARN")
                    || l.contains("ERROR")
                    || l.contains("NOTICE")
                    || l.contains("Connection error")
            })
            .map(str::to_string)
            .collect::<Vec<_>>()
    };

    // rewrite without a secret and without a database: a clear error, nothing started.
    let (ok, _, err) = mailtally(&["rewrite"], &env, b"Subject: x\r\n\r\nx\r\n");
    assert!(!ok);
    assert!(
        err.contains("TRACKING_SECRET") && err.contains("DATABASE_URL"),
        "{err}"
    );
    assert!(
        !Path::new(data).join("pg").exists(),
        "no cluster made for a preview"
    );

    let (ok, out, err) = mailtally(&["migrate"], &env, b"");
    assert!(ok, "{err}");
    assert!(out.contains("applied migrations"), "{out}");
    assert_eq!(noise(&err), Vec::<String>::new(), "{err}");

    let (ok, out, err) = mailtally(&["migrate"], &env, b"");
    assert!(ok, "{err}");
    assert!(out.contains("database up to date"), "{out}");
    assert_eq!(noise(&err), Vec::<String>::new(), "{err}");

    // A migrated database whose serve never ran holds no secret: say what is needed.
    let (ok, _, err) = mailtally(&["rewrite"], &env, b"Subject: x\r\n\r\nx\r\n");
    assert!(!ok);
    assert!(
        err.contains("no tracking secret") && err.contains("TRACKING_SECRET"),
        "{err}"
    );
    assert!(!err.contains("Connection error"), "{err}");
}

#[tokio::test]
async fn rewrite_uses_the_secret_kept_in_the_database() {
    let db = TestDb::migrated();
    db.client()
        .await
        .execute(
            "INSERT INTO server_settings (key, value) VALUES ('tracking_secret', 'kept-secret')",
            &[],
        )
        .await
        .unwrap();
    let message =
        b"Subject: Hi\r\nContent-Type: text/html\r\n\r\n<a href=\"https://example.com/\">x</a>\r\n";
    let (ok, out, err) = mailtally(
        &["rewrite"],
        &[
            ("DATABASE_URL", db.url.as_str()),
            ("PUBLIC_URL", "https://t.example.net"),
        ],
        message,
    );
    assert!(ok, "{err}");
    assert!(!err.contains("WARN"), "{err}");
    let token = out
        .split("https://t.example.net/c/")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a tracked link");
    let keys = mailtally::rewrite::TokenKeys::new(b"kept-secret", &[]);
    assert!(mailtally::rewrite::verify(&keys, token).is_ok());
}

#[test]
fn help_prints_the_settings_table_once_with_aligned_wrapping() {
    let (ok, out, _) = mailtally(&["--help"], &[], b"");
    assert!(ok);
    assert_eq!(out.matches("Settings (environment").count(), 1, "{out}");
    let table = out.split("Settings (environment").nth(1).unwrap();
    let keys: Vec<&str> = mailtally::config::SETTINGS.iter().map(|s| s.key).collect();
    let mut listed = Vec::new();
    for line in table.lines().skip(1).filter(|l| !l.is_empty()) {
        assert!(
            line.chars().count() <= mailtally::config::HELP_WIDTH,
            "too wide: {line:?}"
        );
        if let Some(key) = line.strip_prefix("  ").filter(|k| !k.starts_with(' ')) {
            assert!(keys.contains(&key), "not a key line: {line:?}");
            listed.push(key);
        } else {
            assert!(
                line.starts_with("          ") && !line.starts_with("           "),
                "help text not aligned at column 10: {line:?}"
            );
        }
    }
    assert_eq!(listed, keys);
    for command in ["serve", "migrate", "aggregate", "rewrite"] {
        let (ok, out, _) = mailtally(&[command, "--help"], &[], b"");
        assert!(ok);
        assert!(
            !out.contains("MAILTALLY_DATA"),
            "{command} --help repeats the table: {out}"
        );
    }
}

/// scripts/test stops the clusters its run started, and no other: not another checkout's,
/// not one of this checkout that was already running when the run began.
#[test]
fn scripts_test_stops_only_the_clusters_its_run_started() {
    use mailtally::store::{Cluster, ClusterOptions};
    let tmp = data_home();
    let other = tmp.path().join("mailtally-test-other");
    let ours = tmp.path().join("mailtally-test-ours");
    let checkout_target = tmp.path().join("checkout/target");
    for (dir, target) in [
        (&other, tmp.path().join("elsewhere/target/tmp")),
        (&ours, checkout_target.join("tmp")),
    ] {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("target-tmpdir"), target.to_str().unwrap()).unwrap();
        Cluster::ensure_running(&dir.join("pg"), ClusterOptions { durable: false }).unwrap();
    }
    let running = |dir: &Path| {
        let pid = std::fs::read_to_string(dir.join("pg/data/postmaster.pid")).unwrap_or_default();
        pid.lines()
            .next()
            .and_then(|p| p.parse::<i32>().ok())
            .is_some_and(|p| nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), None).is_ok())
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/test");
    let run = |between: &str| {
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!(
                "source {}; record_running_clusters; {between}; stop_this_runs_clusters",
                script.display()
            ))
            .env("TMPDIR", tmp.path())
            .env("CARGO_TARGET_DIR", &checkout_target)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };

    // Both running before the run: neither is this run's.
    run("true");
    assert!(running(&other) && running(&ours));

    // Ours stopped, then started during the run (as the harness does): stopped at its end.
    let ours_cluster =
        Cluster::ensure_running(&ours.join("pg"), ClusterOptions { durable: false }).unwrap();
    ours_cluster.stop().unwrap();
    assert!(!running(&ours));
    let start = format!(
        "bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1); \
         pg=(\"$bin/pg_ctl\" start -w -D {data} -l /dev/null); \
         if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- \"${{pg[@]}}\" >/dev/null; \
         else \"${{pg[@]}}\" >/dev/null; fi",
        data = ours.join("pg/data").display()
    );
    run(&start);
    assert!(!running(&ours), "the cluster this run started is stopped");
    assert!(
        running(&other),
        "another checkout's cluster is left running"
    );

    let other_cluster =
        Cluster::ensure_running(&other.join("pg"), ClusterOptions { durable: false }).unwrap();
    other_cluster.stop().unwrap();
}
