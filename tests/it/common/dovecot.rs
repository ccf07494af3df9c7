//! A real IMAP server for the mailbox tests: Dovecot, started with a throwaway configuration
//! serving one user's Maildir on a loopback port.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::api::call;
use super::free_port;
use super::smtp::{listening, python};
use super::Server;

/// A Dovecot serving one user's Maildir on a loopback port, plain IMAP.
pub struct Dovecot {
    child: Child,
    pub port: u16,
    /// The owner of the Maildirs, the user Dovecot reads them as.
    pub mail_owner: (nix::unistd::Uid, nix::unistd::Gid),
    dir: tempfile::TempDir,
}

impl Dovecot {
    /// `idle: false` hides IDLE from the capabilities, so that clients must poll.
    pub fn start(user: &str, password: &str, idle: bool) -> Option<Dovecot> {
        let binary = ["/usr/sbin/dovecot", "/usr/local/sbin/dovecot"]
            .into_iter()
            .find(|p| Path::new(p).exists())?;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let root = nix::unistd::geteuid().is_root();
        let me = nix::unistd::User::from_uid(nix::unistd::geteuid())
            .unwrap()
            .unwrap()
            .name;
        // As root Dovecot drops to its own users and the mail belongs to `nobody`; otherwise
        // everything runs as the current user.
        let (internal, login, mail_user, mail_group) = if root {
            ("dovecot", "dovenull", "nobody", "nogroup")
        } else {
            (me.as_str(), me.as_str(), me.as_str(), me.as_str())
        };
        std::fs::create_dir_all(d.join("mail")).unwrap();
        std::fs::create_dir_all(d.join("run")).unwrap();
        std::fs::create_dir_all(d.join("state")).unwrap();
        if root {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
            let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
            nix::unistd::chown(&d.join("mail"), Some(nobody.uid), Some(nobody.gid)).unwrap();
        }
        std::fs::write(d.join("passwd"), format!("{user}:{{PLAIN}}{password}\n")).unwrap();
        let port = free_port();
        let conf = format!(
            "base_dir = {d}/run\nstate_dir = {d}/state\nlog_path = {d}/dovecot.log\n\
             instance_name = mailtally-test-{port}\nprotocols = imap\nlisten = 127.0.0.1\n\
             ssl = no\ndisable_plaintext_auth = no\nauth_mechanisms = plain login\n\
             mail_location = maildir:{d}/mail/%u\ndefault_internal_user = {internal}\n\
             default_login_user = {login}\nfirst_valid_uid = 1\n\
             passdb {{\n driver = passwd-file\n args = scheme=PLAIN username_format=%u {d}/passwd\n}}\n\
             userdb {{\n driver = static\n args = uid={mail_user} gid={mail_group} home={d}/mail/%u\n}}\n\
             service imap-login {{\n inet_listener imap {{\n  address = 127.0.0.1\n  port = {port}\n }}\n inet_listener imaps {{\n  port = 0\n }}\n}}\n\
             service stats {{\n unix_listener stats-reader {{\n  mode = 0666\n }}\n unix_listener stats-writer {{\n  mode = 0666\n }}\n}}\n",
            d = d.display()
        );
        let conf = if idle {
            conf
        } else {
            format!("{conf}imap_capability = IMAP4rev1 LITERAL+ SASL-IR LOGIN-REFERRALS ID ENABLE UIDPLUS\n")
        };
        std::fs::write(d.join("dovecot.conf"), conf).unwrap();
        let child = Command::new(binary)
            .args(["-F", "-c"])
            .arg(d.join("dovecot.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        assert!(
            listening(port, Duration::from_secs(10)),
            "Dovecot did not start: {}",
            std::fs::read_to_string(d.join("dovecot.log")).unwrap_or_default()
        );
        let mail_owner = if root {
            let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
            let nogroup = nix::unistd::Group::from_name("nogroup").unwrap().unwrap();
            (nobody.uid, nogroup.gid)
        } else {
            (nix::unistd::geteuid(), nix::unistd::getegid())
        };
        Some(Dovecot {
            child,
            port,
            mail_owner,
            dir,
        })
    }

    /// Where the mail of every user lives: `user`'s Maildir is the directory named after them.
    pub fn mail_root(&self) -> PathBuf {
        self.dir.path().join("mail")
    }

    /// Has `server` watch `user`'s mailbox here, for the user of API `token`.
    pub fn watched_by(&self, server: &Server, token: &str, user: &str, password: &str) {
        let mailbox = serde_json::json!({"host": "127.0.0.1", "port": self.port,
            "security": "none", "username": user, "password": password});
        let (status, body) = call(
            "PUT",
            &server.url("/api/me/mailbox"),
            token,
            Some(&mailbox),
            None,
        );
        assert_eq!(status, 200, "{body}");
    }

    /// Appends a message to INBOX with a real IMAP client (Python's imaplib).
    pub fn append(&self, user: &str, password: &str, message: &str) {
        let (ok, out) = python(
            "import imaplib, sys\n\
             m = imaplib.IMAP4('127.0.0.1', int(sys.argv[1]))\n\
             m.login(sys.argv[2], sys.argv[3])\n\
             print(m.append('INBOX', None, None, sys.argv[4].encode()))\n\
             m.logout()\n",
            &[&self.port.to_string(), user, password, message],
        );
        assert!(ok, "{out}");
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}
