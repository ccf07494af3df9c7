//! The `mailtally` command line.

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand};
use mailtally::accounts::{self, Role};
use mailtally::config::{LogFormat, Settings, Sources, UnknownVariable};

/// mimalloc rather than the system allocator: the relay, the tracking endpoints and the fold
/// allocate per message and per request on many threads, where glibc's arenas cost CPU and
/// keep freed memory resident.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "mailtally",
    version,
    about = "SMTP relay that tracks opens and clicks and reports engagement per template",
    after_long_help = Settings::help_table(),
    after_help = "Settings: see `mailtally --help` for every key and its default."
)]
// The settings table is printed once, by the top-level `--help`; subcommands point to it.
struct Cli {
    /// TOML file with settings (the environment variables' names, or [section] fields as
    /// `--help` lists them); environment wins.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run everything: SMTP relay, delivery, HTTP (tracking, API, Insights, /metrics).
    /// Applies pending migrations first; starts the embedded PostgreSQL when DATABASE_URL is unset.
    #[command(after_long_help = SEE_SETTINGS)]
    Serve,
    /// Apply pending migrations and exit.
    #[command(after_long_help = SEE_SETTINGS)]
    Migrate,
    /// Fold new events into the Insights rollups until caught up, with a progress bar.
    #[command(after_long_help = SEE_SETTINGS)]
    Aggregate(AggregateArgs),
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Erase one recipient: every copy sent to them, its events and stored address, and their
    /// share of every report.
    Erase(EraseArgs),
    /// Read one message on stdin and write what the relay would deliver to one recipient
    /// (uses the configured tracking secret and PUBLIC_URL).
    Rewrite(RewriteArgs),
}

const SEE_SETTINGS: &str = "Settings: see `mailtally --help` for every key and its default.";

#[derive(Args)]
struct EraseArgs {
    /// The recipient's e-mail address (compared case-insensitively).
    #[arg(long)]
    recipient: String,
}

#[derive(Args)]
struct RewriteArgs {
    /// The recipient whose copy to show.
    #[arg(long, default_value = "recipient@example.com")]
    recipient: String,
    /// Template key to use instead of X-Mailtally-Template or the subject.
    #[arg(long)]
    template: Option<String>,
}

#[derive(Args)]
struct AggregateArgs {
    /// Events folded per transaction (smaller: shorter locks and finer progress).
    #[arg(long, default_value_t = mailtally::insights::aggregate::DEFAULT_BATCH,
          value_parser = clap::value_parser!(i64).range(1..=10_000_000))]
    batch_size: i64,
    /// Workers folding at once, one connection each: at most one per part of the copies
    /// (`insights::aggregate::PARTS`), since a part is folded by one worker at a time.
    #[arg(long, default_value_t = mailtally::insights::aggregate::PARTS as u16,
          value_parser = clap::value_parser!(u16)
              .range(1..=i64::from(mailtally::insights::aggregate::PARTS)))]
    workers: u16,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user who may submit mail and read reports; prints an API token once.
    Add(UserAdd),
}

#[derive(Args)]
struct UserAdd {
    /// The user's e-mail address (also the SMTP AUTH user name).
    #[arg(long)]
    email: String,
    /// Read the password from standard input (first line).
    #[arg(long, required = true)]
    password_stdin: bool,
    /// Team name; created when new.
    #[arg(long)]
    team: Option<String>,
    /// Make the user an administrator.
    #[arg(long)]
    admin: bool,
}

fn init_logging(settings: &Settings) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&settings.log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match settings.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Human => builder.init(),
    }
}

/// The shortest tracking secret that does not draw a warning (256 bits as hex would be 64).
const MIN_SECRET_LEN: usize = 32;

fn warning_text(v: &UnknownVariable) -> String {
    match v.likely {
        Some(key) => format!(
            "environment variable {} is not a mailtally setting; did you mean {key}?",
            v.name
        ),
        None => format!(
            "environment variable {} is not a mailtally setting (see `mailtally --help`)",
            v.name
        ),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Every setting is checked here, before a database, a listener or a file is touched.
    let sources = Sources::load(cli.config.as_deref())?;
    let settings = match Settings::from_sources(&sources) {
        Ok(settings) => settings,
        Err(e) => {
            // Logging is not set up without settings; a misspelt key may be why they fail.
            for v in sources.unknown_variables() {
                eprintln!("warning: {}", warning_text(v));
            }
            return Err(e.into());
        }
    };
    init_logging(&settings);
    for v in sources.unknown_variables() {
        tracing::warn!(variable = %v.name, likely = v.likely, "{}", warning_text(v));
    }
    // A short secret lets anyone who guesses it sign redirects; refusing it would stop
    // installations that already run with one, so it is a warning.
    for (key, secret) in
        std::iter::once(("TRACKING_SECRET", settings.rewrite.tracking_secret.as_ref())).chain(
            settings
                .rewrite
                .tracking_secret_previous
                .iter()
                .map(|s| ("TRACKING_SECRET_PREVIOUS", Some(s))),
        )
    {
        if secret.is_some_and(|s| s.len() < MIN_SECRET_LEN) {
            tracing::warn!(
                setting = key,
                "{key} has fewer than {MIN_SECRET_LEN} characters: tracked links can be forged by \
                 guessing it; use a long random value (`openssl rand -hex 32`)"
            );
        }
    }
    if matches!(cli.command, Command::Serve) {
        // The DKIM key is parsed here so that a bad one stops startup before anything runs.
        mailtally::rewrite::rewriter::rewrite_settings(&settings)
            .context("invalid DKIM settings")?;
        // So are the contents of the other files serve reads: the STARTTLS pair (when given;
        // else a self-signed one is made later) and the Apple MPP address list.
        if settings.relay.tls_cert.is_some() && settings.relay.tls_key.is_some() {
            mailtally::relay::tls::acceptor(&settings)
                .context("invalid TLS_CERT / TLS_KEY: expected a PEM certificate chain and its PEM private key")?;
        }
        mailtally::classify::Classifier::load(settings.track.apple_mpp_cidrs.as_deref())
            .context("invalid APPLE_MPP_CIDRS: expected one CIDR (such as 17.0.0.0/8) a line")?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run(cli.command, settings))
}

async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Serve => mailtally::serve::run(settings)
            .await
            .context("mailtally serve failed"),
        Command::Migrate => migrate(&settings).await,
        Command::Erase(args) => {
            let (db, pool) = mailtally::serve::open_store(&settings).await?;
            let result = async {
                let mut client = pool.get().await.context("cannot connect to the database")?;
                let tx = client.transaction().await?;
                let n = mailtally::erasure::erase_recipient(&tx, &args.recipient).await?;
                tx.commit().await?;
                anyhow::Ok(n)
            }
            .await;
            mailtally::store::close_pool(pool).await;
            db.close();
            let n = result.context("erasure failed")?;
            println!("erased {n} copies sent to {}", args.recipient.trim());
            Ok(())
        }
        Command::Rewrite(args) => {
            let mut raw = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut raw)
                .context("cannot read the message from standard input")?;
            // The secret of the installation, so that the preview's links work against it.
            let stored = if settings.rewrite.tracking_secret.is_some() {
                String::new()
            } else {
                stored_tracking_secret(&settings).await?
            };
            let rewriter = mailtally::rewrite::Rewriter::new(&settings, &stored)
                .context("invalid DKIM settings")?;
            let out = mailtally::rewrite::preview(
                &raw,
                &args.recipient,
                args.template.as_deref(),
                &rewriter.settings,
                &rewriter.keys,
            );
            std::io::Write::write_all(&mut std::io::stdout(), &out)
                .context("cannot write the copy")?;
            Ok(())
        }
        Command::Aggregate(args) => aggregate(settings, args.batch_size, args.workers.into()).await,
        Command::User(UserCommand::Add(args)) => {
            let mut password = String::new();
            std::io::stdin()
                .read_line(&mut password)
                .context("cannot read the password from standard input")?;
            let password = password.trim_end_matches(['\r', '\n']);
            if password.is_empty() {
                bail!("no password on standard input");
            }
            let (db, pool) = mailtally::serve::open_store(&settings).await?;
            let result = async {
                let mut client = pool.get().await.context("cannot connect to the database")?;
                let role = if args.admin {
                    Role::Admin
                } else {
                    Role::Member
                };
                accounts::add_user(
                    &mut client,
                    &args.email,
                    password,
                    args.team.as_deref(),
                    role,
                )
                .await
                .context("cannot add the user")
            }
            .await;
            mailtally::store::close_pool(pool).await;
            db.close();
            let new = result?;
            println!(
                "user {} created (id {}, {})",
                new.user.email,
                new.user.id,
                new.user.role.as_str()
            );
            println!("API token (shown once): {}", new.api_token);
            Ok(())
        }
    }
}

/// `mailtally aggregate`: catches up with a progress bar sized by the events pending at start.
async fn aggregate(settings: Settings, batch_size: i64, workers: usize) -> anyhow::Result<()> {
    use mailtally::insights::aggregate;
    mailtally::metrics::init();
    let (db, pool) = mailtally::serve::open_store(&settings).await?;
    let result = async {
        let mut clients = Vec::new();
        for _ in 0..workers {
            clients.push(pool.get().await.context("cannot connect to the database")?);
        }
        let (pending, _) = aggregate::lag(&clients[0]).await?;
        let bar = indicatif::ProgressBar::new(pending.max(0) as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{wide_bar}] {human_pos}/{human_len} events ({per_sec}, eta {eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let started = std::time::Instant::now();
        let workers = clients.iter_mut().map(|c| -> &mut tokio_postgres::Client { c });
        let folded = aggregate::run_workers(workers.collect(), batch_size, true, |n| {
            // Events written during the run make the total grow.
            if bar.position() + n > bar.length().unwrap_or(0) {
                bar.set_length(bar.position() + n);
            }
            bar.inc(n);
        })
        .await?;
        bar.finish_and_clear();
        let secs = started.elapsed().as_secs_f64();
        println!(
            "folded {folded} events in {secs:.2} s ({:.0} events/s)",
            folded as f64 / secs.max(1e-9)
        );
        anyhow::Ok(())
    }
    .await;
    mailtally::store::close_pool(pool).await;
    db.close();
    result
}

/// `mailtally migrate`: applies what is pending and says what it did, or that nothing was.
async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    use mailtally::store::{self, migrate::MIGRATIONS, Database};
    let db = Database::open(
        settings.store.database_url.as_deref(),
        &settings.store.data_dir,
    )
    .await
    .context("cannot open the database")?;
    let result = async {
        let pool = store::pool(&db.url, 1)?;
        let applied = store::migrate(&pool).await;
        store::close_pool(pool).await;
        applied
    }
    .await;
    db.close();
    let applied = result.context("migration failed")?;
    let latest = MIGRATIONS.last().map_or(0, |m| m.version);
    if applied.is_empty() {
        println!("database up to date (migration {latest})");
    } else {
        let list: Vec<String> = applied.iter().map(i32::to_string).collect();
        println!(
            "applied migrations {}; database at migration {latest}",
            list.join(", ")
        );
    }
    Ok(())
}

/// The tracking secret `serve` generated and kept in the database, for `rewrite` without
/// TRACKING_SECRET. Read only: a preview never creates a database, a cluster or a secret,
/// since links signed with a secret no server uses would not work.
async fn stored_tracking_secret(settings: &Settings) -> anyhow::Result<String> {
    use mailtally::store::{self, Database};
    const NEEDS: &str = "mailtally rewrite signs links with the installation's tracking secret: \
                         set TRACKING_SECRET to it, or point DATABASE_URL (or MAILTALLY_DATA) \
                         at the database of a mailtally that has run `serve`";
    if settings.store.database_url.is_none()
        && !settings.store.data_dir.join("pg/data/PG_VERSION").exists()
    {
        bail!(
            "no database under {} and no TRACKING_SECRET; {NEEDS}",
            settings.store.data_dir.join("pg").display()
        );
    }
    let db = Database::open(
        settings.store.database_url.as_deref(),
        &settings.store.data_dir,
    )
    .await
    .context("cannot open the database")?;
    let result = async {
        let pool = store::pool(&db.url, 1)?;
        let row = async {
            let client = pool.get().await?;
            let secret = store::server_settings::stored_tracking_secret(&**client).await?;
            Ok::<_, store::StoreError>(secret)
        }
        .await;
        store::close_pool(pool).await;
        row
    }
    .await;
    db.close();
    let secret = match result {
        Ok(Some(secret)) => secret,
        Ok(None) => bail!("the database holds no tracking secret yet; {NEEDS}"),
        Err(store::StoreError::Db(e))
            if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) =>
        {
            bail!("the database is not a mailtally database yet; {NEEDS}")
        }
        Err(e) => return Err(anyhow::Error::from(e).context("cannot read the tracking secret")),
    };
    Ok(secret)
}
