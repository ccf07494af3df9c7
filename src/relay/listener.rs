//! Accepts SMTP connections on SMTP_LISTEN, bounded by MAX_SMTP_SESSIONS, and stops accepting
//! on shutdown while open sessions finish what they are doing.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use super::session::{self, Shared};
use super::{tls, RelayError, METRICS};
use crate::base::Base;

/// The running relay; [`Relay::stopped`] waits for its sessions after shutdown.
pub struct Relay {
    sessions: TaskTracker,
    accept_task: tokio::task::JoinHandle<()>,
    pub local_addr: std::net::SocketAddr,
}

/// Longest wait for open sessions at shutdown (an in-flight DATA commit takes far less).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

impl Relay {
    /// Waits until the accept loop has ended and the sessions have closed (bounded).
    pub async fn stopped(self) {
        let _ = self.accept_task.await;
        self.sessions.close();
        if tokio::time::timeout(DRAIN_TIMEOUT, self.sessions.wait())
            .await
            .is_err()
        {
            tracing::warn!("SMTP sessions still open after {DRAIN_TIMEOUT:?}; leaving them");
        }
    }
}

/// Binds SMTP_LISTEN and starts accepting.
pub async fn start(ctx: Base, rewriter: crate::rewrite::Rewriter) -> Result<Relay, RelayError> {
    let addr = ctx.settings.relay.listen;
    let tls = tls::acceptor(&ctx.settings)?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| RelayError::Bind { addr, source })?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| RelayError::Bind { addr, source })?;
    let queue = &ctx.settings.queue;
    let enqueuer = crate::queue::GroupCommit::start(
        ctx.pool.clone(),
        crate::queue::CommitShape {
            window: queue.commit_window,
            max_messages: queue.commit_max_messages,
            committers: queue.committers,
        },
    );
    let shared = Arc::new(Shared {
        enqueuer,
        hostname: crate::base::host_name(),
        tls,
        ctx: ctx.clone(),
        rewriter,
        auth_limiter: crate::accounts::limiter::FailureLimiter::new(
            ctx.settings.accounts.max_failures_per_ip,
            ctx.settings.accounts.failure_window,
        ),
    });
    let sessions = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(ctx.settings.relay.max_sessions.max(1)));
    let accept_task = tokio::spawn(accept_loop(listener, shared, sessions.clone(), slots));
    tracing::info!(smtp = %local_addr, "SMTP relay listening");
    Ok(Relay {
        sessions,
        accept_task,
        local_addr,
    })
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    sessions: TaskTracker,
    slots: Arc<Semaphore>,
) {
    let shutdown = shared.ctx.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "SMTP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                let shared = shared.clone();
                sessions.spawn(async move {
                    METRICS.sessions_total.inc();
                    METRICS.sessions_active.inc();
                    session::run(shared, stream, peer).await;
                    METRICS.sessions_active.dec();
                    drop(permit);
                });
            }
            Err(_) => {
                sessions.spawn(too_many(stream));
            }
        }
    }
    tracing::info!("SMTP relay stopped accepting");
}

async fn too_many(mut stream: TcpStream) {
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        stream.write_all(b"421 4.3.2 Too many connections, try later\r\n"),
    )
    .await;
}
