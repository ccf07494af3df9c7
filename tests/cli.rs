//! The command line as a user runs it: `user add`, `migrate`, `serve` with the embedded cluster.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{mailtally, TestDb};
use mailtally::api::accounts;

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
    let message = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: Hi\r\nX-Mailtally-Template: hello\r\n\
Content-Type: text/html; charset=utf-8\r\n\r\n<html><body><p>See <a href=\"https://example.com/x?a=1&amp;b=2\">this</a></p></body></html>\r\n";
    let (ok, out, err) = mailtally(
        &["rewrite", "--recipient", "b@example.com"],
        &[
            ("TRACKING_SECRET", "cli-secret"),
            ("PUBLIC_URL", "https://t.example.net"),
        ],
        message,
    );
    assert!(ok, "{err}");
    assert!(
        !out.contains("X-Mailtally-Template"),
        "control headers never leave: {out}"
    );
    let token = out
        .split("https://t.example.net/c/")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a tracked link");
    let keys = mailtally::rewrite::TokenKeys::new(b"cli-secret", &[]);
    match mailtally::rewrite::verify(&keys, token).unwrap() {
        mailtally::rewrite::Verified::Click { url, link, .. } => {
            assert_eq!(url, "https://example.com/x?a=1&b=2");
            assert_eq!(link, 0);
        }
        other => panic!("not a click token: {other:?}"),
    }
    assert!(out.contains("https://t.example.net/o/"), "the pixel");
}
