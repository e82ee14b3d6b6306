//! The `lumberd` command: parse arguments, load and validate the configuration before
//! binding anything, set up logging and signals, then hand over to `lumberd::run`.

// Unsafe only for glibc's mallopt (`tune_allocator`): measured need, see there.
#![deny(unsafe_code)]

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use lumberd::client::{self, ClientTls, SendOptions};
use lumberd::config::{ConfigError, LogFormat, LogSettings, Settings};
use lumberd::protocol::Compression;
use lumberd::tls::TlsServer;
use tokio_util::sync::CancellationToken;

/// sysexits.h EX_CONFIG: the configuration is wrong.
const EXIT_CONFIG: u8 = 64;
/// A second signal cut the drain short: the shell's 128 + SIGINT.
const EXIT_INTERRUPTED: u8 = 130;

#[derive(Parser)]
#[command(
    name = "lumberd",
    version,
    about = "A Lumberjack v2 (Beats) server for Filebeat: receive, transform, store."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve Beats clients (defaults: listen 0.0.0.0:5044, data dir ./data).
    Serve {
        /// TOML configuration file; every key has a default (see config/lumberd.toml).
        #[arg(long, env = "LUMBERD_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Validate a configuration file (with LUMBERD_* overrides): exit 0, or 64 listing every problem.
    CheckConfig { file: PathBuf },
    /// Ship the lines of log files to a Beats endpoint as Filebeat would, and report what was acknowledged.
    Send {
        /// The endpoint, host:port.
        #[arg(long)]
        host: String,
        /// zlib level 0-9 (0: no compression); Filebeat's default is 3.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(0..=9))]
        compress: u32,
        /// Events per window; Filebeat's bulk_max_size default is 2048.
        #[arg(long, default_value_t = 2048, value_parser = clap::value_parser!(u32).range(1..))]
        window: u32,
        /// Connect timeout and ACK timeout (any ACK restarts it), as Filebeat's `timeout`.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// Connect over TLS, verifying the server against these CA certificates (PEM), as
        /// Filebeat's ssl.certificate_authorities. Any --tls-* flag turns TLS on; without
        /// --tls-ca the system's roots are used.
        #[arg(long, value_name = "PEM")]
        tls_ca: Option<PathBuf>,
        /// Client certificate chain (PEM), as Filebeat's ssl.certificate.
        #[arg(long, value_name = "PEM", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// Client private key (PEM: PKCS#8, PKCS#1 or SEC1), as Filebeat's ssl.key.
        #[arg(long, value_name = "PEM", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Name to verify the server certificate against (default: the host of --host).
        #[arg(long, value_name = "NAME")]
        tls_server_name: Option<String>,
        /// Do not verify the server certificate (Filebeat's verification_mode: none).
        #[arg(long, conflicts_with = "tls_ca")]
        tls_insecure: bool,
        /// Log files: one event per line.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Translate Logstash pipeline files into lumberd's TOML (stdout). Anything that cannot
    /// be translated is listed on stderr with its line, and the exit code is 64.
    ImportLogstash {
        /// Print what could be translated, with the refusals as comments (still exit 64).
        #[arg(long)]
        partial: bool,
        /// Logstash .conf files, concatenated in the order given (as path.config does).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// Allocations of this size and more get pages of their own from the kernel, given back
/// on free, with glibc's threshold fixed rather than rising to the largest block freed.
const MMAP_THRESHOLD_BYTES: i32 = 1024 * 1024;

/// glibc raises its mmap threshold to the largest block freed (up to 32 MiB), after which
/// large frames come from its arenas, which keep freed memory: measured
/// (tests/memory.rs, release build), 64 connections after a 6 MiB event each peaked at
/// 124-148 MiB and stayed at 81-88 MiB idle; with the threshold fixed at 1 MiB, 70-76 MiB
/// and 10-16 MiB (`MALLOC_ARENA_MAX=1` instead: 166 MiB peak). Before any thread starts.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn tune_allocator() {
    /// `M_MMAP_THRESHOLD` in glibc's malloc.h.
    const M_MMAP_THRESHOLD: i32 = -3;
    extern "C" {
        fn mallopt(param: i32, value: i32) -> i32;
    }
    // SAFETY: mallopt only sets an allocator parameter; it is called before the runtime's
    // threads exist.
    unsafe {
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => match load(Some(&file)) {
            Ok(settings) => {
                for w in &settings.warnings {
                    eprintln!("{}: warning: {w}", file.display());
                }
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                for p in &e.problems {
                    eprintln!("{}: {p}", file.display());
                }
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::ImportLogstash { partial, files } => import_logstash(&files, partial),
        Command::Serve { config } => {
            tune_allocator();
            let settings = match load(config.as_deref()) {
                Ok(s) => s,
                Err(e) => {
                    for p in &e.problems {
                        eprintln!("lumberd: configuration: {p}");
                    }
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            init_logging(&settings.log);
            for w in &settings.warnings {
                tracing::warn!("configuration: {w}");
            }
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("lumberd: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let result = runtime.block_on(async {
                let shutdown = CancellationToken::new();
                tokio::spawn(signals(shutdown.clone()));
                lumberd::run(settings, shutdown).await
            });
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("lumberd: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Send {
            host,
            compress,
            window,
            timeout,
            tls_ca,
            tls_cert,
            tls_key,
            tls_server_name,
            tls_insecure,
            files,
        } => {
            let tls = (tls_ca.is_some()
                || tls_cert.is_some()
                || tls_server_name.is_some()
                || tls_insecure)
                .then_some(ClientTls {
                    ca: tls_ca,
                    cert: tls_cert,
                    key: tls_key,
                    server_name: tls_server_name,
                    insecure: tls_insecure,
                });
            let opts = SendOptions {
                host,
                compression: Compression::from_level(compress),
                window: window as usize,
                timeout,
                tls,
                files,
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            let result = runtime
                .map_err(anyhow::Error::from)
                .and_then(|r| r.block_on(client::send(&opts)));
            match result {
                Ok(r) => {
                    println!(
                        "acknowledged {} events in {} windows by {} ({} keep-alives)",
                        r.events, r.windows, opts.host, r.keepalives
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("lumberd send: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `import-logstash`: the translation on stdout when complete (or with `--partial`),
/// each refusal on stderr; exit 64 when anything was refused.
fn import_logstash(files: &[PathBuf], partial: bool) -> ExitCode {
    let mut texts = Vec::new();
    for f in files {
        match std::fs::read_to_string(f) {
            Ok(t) => texts.push((f.display().to_string(), t)),
            Err(e) => {
                eprintln!("lumberd import-logstash: {}: {e}", f.display());
                return ExitCode::from(EXIT_CONFIG);
            }
        }
    }
    let out = lumberd::logstash::import(&texts);
    for r in &out.refusals {
        eprintln!("lumberd import-logstash: refused: {r}");
    }
    if out.refusals.is_empty() || partial {
        print!("{}", out.toml);
    }
    if out.refusals.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_CONFIG)
    }
}

/// The configuration, validated, then the spool directory tried, then the TLS files it
/// names read and checked (PEM, key form and passphrase, key matching the certificate,
/// certificate not expired): a problem in any is a configuration error (exit 64), found
/// before anything is bound.
fn load(path: Option<&std::path::Path>) -> Result<Settings, ConfigError> {
    let settings = Settings::load(path, std::env::vars())?;
    if let Some(spool) = &settings.spool {
        if let Err(e) = lumberd::output::spooled::check_dir(spool) {
            return Err(ConfigError { problems: vec![e] });
        }
    }
    if let Some(tls) = &settings.tls {
        if let Err(e) = TlsServer::load(tls) {
            return Err(ConfigError {
                problems: vec![e.to_string()],
            });
        }
    }
    Ok(settings)
}

/// The first SIGTERM or SIGINT starts the drain; a second one ends the process at once
/// (an operator's second Ctrl-C), leaving unacknowledged windows to their clients.
async fn signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    // Cancel before logging: shutdown must not depend on stderr being writable.
    shutdown.cancel();
    tracing::info!("{name}: shutting down");
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::warn!("second {name}: exiting without finishing the drain; unacknowledged windows will be resent by their clients");
    std::process::exit(EXIT_INTERRUPTED.into());
}

fn init_logging(log: &LogSettings) {
    let filter = tracing_subscriber::EnvFilter::try_new(&log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = match log.format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    // A closed stderr (a pipe whose reader died) must not make logging panic: its
    // internal-error report uses eprintln!, which panics on EPIPE.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
}
