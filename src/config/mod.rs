//! The configuration file (TOML), its environment overrides and its validation into the
//! typed settings each part of lumberd owns, all before anything is bound. Knows no
//! sockets or runtime objects.
//!
//! Every key has a default (the `DEFAULT_*` constants of its section's file, each with
//! its reason) and is documented in `config/lumberd.toml`. Any key can be overridden by
//! an environment variable `LUMBERD_<SECTION>_<KEY>`, e.g. `LUMBERD_SERVER_LISTEN=0.0.0.0:5044`.
//!
//! One file per section (`server`, `tls`, `output`, `spool`, `log`, `admin`, `pipeline`): its raw
//! serde struct, its defaults and its validation. `raw` reads a section key by key, `env`
//! lays the environment over the file, and `problems` collects every problem found, so
//! that one run of `check-config` lists them all.

use std::path::Path;

use crate::admin::AdminSettings;
use crate::output::spooled::SpooledSettings;
use crate::pipeline::PipelineSettings;
use crate::server::settings::ServerSettings;
use crate::tls::settings::TlsSettings;

mod admin;
mod env;
mod log;
mod output;
mod pipeline;
mod problems;
mod raw;
mod server;
mod spool;
mod tls;

pub use self::log::{LogFormat, LogSettings};
pub use self::output::OutputSettings;
pub use self::problems::ConfigError;
use self::problems::Problems;

const SECTIONS: [&str; 7] = [
    "server", "tls", "output", "spool", "log", "admin", "pipeline",
];

/// The keys of `[pipeline]` the environment can set; its filters and metrics are tables
/// that only the file can hold.
const PIPELINE_ENV_KEYS: [&str; 2] = ["index", "fingerprint"];

/// Validated settings: everything `run` needs, typed.
#[derive(Debug, Clone)]
pub struct Settings {
    pub server: ServerSettings,
    /// `None` when `[tls] enabled = false`: the port speaks plain Beats.
    pub tls: Option<TlsSettings>,
    pub output: OutputSettings,
    /// `None` when `[spool] dir` is empty (or the file output makes it moot).
    pub spool: Option<SpooledSettings>,
    pub log: LogSettings,
    pub admin: AdminSettings,
    pub pipeline: PipelineSettings,
    /// What `check-config` warns about (and `serve` logs): valid, but maybe not meant.
    pub warnings: Vec<String>,
}

impl Settings {
    /// Reads `path` (or only defaults when `None`), applies `LUMBERD_*` variables from
    /// `env`, and validates. Collects every problem instead of stopping at the first.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        let mut problems = Problems::default();
        let (text, mut table) = match path {
            None => (None, toml::Table::new()),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
                    problems: vec![format!("{}: cannot read: {e}", path.display())],
                })?;
                let table = text.parse::<toml::Table>().map_err(|e| ConfigError {
                    problems: vec![syntax_error(path, &text, &e)],
                })?;
                for (section, key, line) in raw::key_lines(&text) {
                    let name = match key {
                        Some(key) => format!("{section}.{key}"),
                        None => section,
                    };
                    problems.set_line(name, line);
                }
                (Some(text), table)
            }
        };
        let from_env = env::apply(&mut table, env, &mut problems);
        for key in table.keys() {
            if !SECTIONS.contains(&key.as_str()) {
                problems.section(
                    key,
                    format!("unknown section (expected one of {})", SECTIONS.join(", ")),
                );
            }
        }
        for key in from_env.keys() {
            if let Some(k) = key.strip_prefix("pipeline.") {
                if !PIPELINE_ENV_KEYS.contains(&k) {
                    problems.key(
                        key,
                        "cannot be set from the environment (only index and fingerprint can)",
                    );
                }
            }
        }
        let server = raw::section(&mut table, "server", &from_env, &mut problems);
        let tls = raw::section(&mut table, "tls", &from_env, &mut problems);
        let output = raw::section(&mut table, "output", &from_env, &mut problems);
        let log = raw::section(&mut table, "log", &from_env, &mut problems);
        let admin = raw::section(&mut table, "admin", &from_env, &mut problems);
        let spool = raw::section(&mut table, "spool", &from_env, &mut problems);
        let server = server::validate(server, &mut problems);
        let output = output::validate(output, &mut problems);
        let spool = spool::validate(spool, &server, &output, &mut problems);
        let mut settings = Settings {
            server,
            tls: tls::validate(tls, &mut problems),
            output,
            spool,
            log: log::validate(log, &mut problems),
            admin: admin::validate(admin, &mut problems),
            pipeline: pipeline::load(text.as_deref(), &from_env, &mut problems),
            warnings: Vec::new(),
        };
        settings.warnings = problems.warnings();
        settings.pipeline.max_index_bytes = settings.output.max_index_bytes();
        if problems.is_empty() {
            Ok(settings)
        } else {
            Err(problems.into_error())
        }
    }
}

/// A file that is not TOML: where, and what toml says, on one line.
fn syntax_error(path: &Path, text: &str, e: &toml::de::Error) -> String {
    let message = e
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    match e.span() {
        Some(span) => {
            let line = raw::line_of(text, span.start);
            let line_start = text[..span.start].rfind('\n').map_or(0, |i| i + 1);
            let column = text[line_start..span.start].chars().count() + 1;
            format!(
                "{}: line {line}, column {column}: {message}",
                path.display()
            )
        }
        None => format!("{}: {message}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    pub(super) fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn reference() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/lumberd.toml")
    }

    #[test]
    fn defaults_alone_are_valid_and_listen_on_the_beats_port() {
        let s = Settings::load(None, env(&[])).expect("defaults must validate");
        assert_eq!(s.server.listen.port(), 5044);
        assert_eq!(s.output.file.data_dir, PathBuf::from("./data"));
    }

    #[test]
    fn every_problem_is_listed_not_only_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(
            &path,
            "[server]\nlisten = \"nowhere\"\nkeepalive_interval = \"soon\"\n[output]\nqueue_batches = 0\n[bogus]\n",
        )
        .unwrap();
        let err = Settings::load(Some(&path), env(&[("LUMBERD_SERVER_NOPE", "1")])).unwrap_err();
        let all = err.problems.join("\n");
        for needle in [
            "server.listen",
            "keepalive_interval",
            "queue_batches",
            "[bogus]",
            "nope",
        ] {
            assert!(
                all.contains(needle),
                "expected a problem mentioning {needle}, got:\n{all}"
            );
        }
    }

    #[test]
    fn documented_example_config_is_valid() {
        Settings::load(Some(&reference()), env(&[])).expect("config/lumberd.toml must validate");
    }

    #[test]
    fn documented_pipeline_is_the_built_in_default() {
        let documented = Settings::load(Some(&reference()), env(&[]))
            .unwrap()
            .pipeline;
        let built_in = Settings::load(None, env(&[])).unwrap().pipeline;
        assert_eq!(format!("{documented:?}"), format!("{built_in:?}"));
    }

    #[test]
    fn documented_reference_states_every_built_in_default() {
        // TLS and Elasticsearch on, so that their defaults are compared too.
        let on = [
            ("LUMBERD_TLS_ENABLED", "true"),
            ("LUMBERD_TLS_CERTIFICATE", "/c.pem"),
            ("LUMBERD_TLS_KEY", "/k.pem"),
            ("LUMBERD_OUTPUT_ELASTICSEARCH", "http://127.0.0.1:9200"),
        ];
        let documented = Settings::load(Some(&reference()), env(&on)).unwrap();
        let built_in = Settings::load(None, env(&on)).unwrap();
        type Show = fn(&Settings) -> String;
        let sections: [(&str, Show); 5] = [
            ("server", |s| format!("{:?}", s.server)),
            ("tls", |s| format!("{:?}", s.tls)),
            ("output", |s| format!("{:?}", s.output)),
            ("log", |s| format!("{:?}", s.log)),
            ("admin", |s| format!("{:?}", s.admin)),
        ];
        for (section, show) in sections {
            assert_eq!(
                show(&documented),
                show(&built_in),
                "[{section}] in config/lumberd.toml differs from the DEFAULT_* constants"
            );
        }
        assert_eq!(
            built_in.server.keepalive_interval,
            server::DEFAULT_KEEPALIVE_INTERVAL
        );
        assert_eq!(built_in.server.limits, crate::protocol::Limits::DEFAULT);
        assert_eq!(
            built_in.tls.unwrap().handshake_timeout,
            tls::DEFAULT_TLS_HANDSHAKE_TIMEOUT
        );
    }

    #[test]
    fn every_key_of_every_section_is_in_the_documented_reference() {
        let text = std::fs::read_to_string(reference()).unwrap();
        let mut keys_by_section: std::collections::HashMap<&str, Vec<String>> = Default::default();
        let mut section = "";
        for line in text.lines() {
            let t = line.trim();
            if let Some(name) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
                section = name;
                continue;
            }
            // `key = value`, or a commented-out `# key = "example"` for keys with no default.
            let t = t.trim_start_matches('#').trim_start();
            if let Some((key, _)) = t.split_once(" = ") {
                if key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                    keys_by_section
                        .entry(section)
                        .or_default()
                        .push(key.to_string());
                }
            }
        }
        for (name, keys) in [
            ("server", raw::keys_of::<server::RawServer>()),
            ("tls", raw::keys_of::<tls::RawTls>()),
            ("output", raw::keys_of::<output::RawOutput>()),
            ("spool", raw::keys_of::<spool::RawSpool>()),
            ("log", raw::keys_of::<log::RawLog>()),
            ("admin", raw::keys_of::<admin::RawAdmin>()),
        ] {
            assert!(!keys.is_empty(), "no keys found for [{name}]");
            let documented = keys_by_section.get(name).cloned().unwrap_or_default();
            for key in keys {
                assert!(
                    documented.iter().any(|d| d == key),
                    "{name}.{key} is not in config/lumberd.toml (documented: {documented:?})"
                );
            }
        }
    }

    #[test]
    fn a_mistyped_key_does_not_hide_the_other_problems_of_its_section_and_each_names_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(
            &path,
            "[server]\nmax_connections = \"many\"\n\nlisten = \"nowhere\"\nidle_timeout = 5\n[admin]\nheader_timeout = \"0s\"\n",
        )
        .unwrap();
        let err = Settings::load(Some(&path), env(&[])).unwrap_err();
        for want in [
            "server.max_connections: invalid type: string \"many\", expected usize, at line 2",
            "server.listen: `nowhere` is not an address like 0.0.0.0:5044, at line 4",
            "server.idle_timeout: invalid type: integer `5`, expected a duration like \"5s\", at line 5",
            "admin.header_timeout: must be greater than 0, at line 7",
        ] {
            assert!(
                err.problems.iter().any(|p| p == want),
                "expected {want:?} in:\n{err}"
            );
        }
        assert_eq!(err.problems.len(), 4, "{err}");
    }

    #[test]
    fn a_file_that_is_not_toml_is_named_with_its_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broken.toml");
        std::fs::write(&path, "[server]\nlisten = \"a\"\n[admin\n").unwrap();
        let err = Settings::load(Some(&path), env(&[])).unwrap_err();
        assert_eq!(err.problems.len(), 1, "{err}");
        assert!(
            err.problems[0].contains("line 3, column 7"),
            "{}",
            err.problems[0]
        );
    }
}
