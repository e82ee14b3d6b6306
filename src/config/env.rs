//! The environment overlay: `LUMBERD_<SECTION>_<KEY>=value` sets `key` in `[section]`,
//! over the file. Knows the section names, not their keys (each section checks its own).

use std::collections::HashMap;

use super::problems::Problems;
use super::SECTIONS;

/// The text of each key set from the environment, by `section.key`.
pub(super) type EnvText = HashMap<String, String>;

/// Merges the `LUMBERD_*` variables into `table`. The value is read as TOML (a number, a
/// boolean, an array like `["a", "b"]`) when it parses as one, as a string otherwise;
/// each value's text is returned, so that a string key given `12345` or `true` (a
/// password) is still read as the string it is (see `raw::section`).
pub(super) fn apply(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
    problems: &mut Problems,
) -> EnvText {
    let mut text = EnvText::new();
    for (name, value) in env {
        let Some(rest) = name.strip_prefix("LUMBERD_") else {
            continue;
        };
        if rest == "CONFIG" {
            continue; // the --config flag's own variable
        }
        let lower = rest.to_ascii_lowercase();
        let Some((section, key)) = lower.split_once('_') else {
            problems.push(format!("{name}: expected LUMBERD_<SECTION>_<KEY>"));
            continue;
        };
        if !SECTIONS.contains(&section) {
            problems.push(format!("{name}: unknown section `{section}`"));
            continue;
        }
        let parsed = format!("v = {value}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .filter(|v| v.is_integer() || v.is_bool() || v.is_float() || v.is_array())
            .unwrap_or_else(|| toml::Value::String(value.clone()));
        let entry = table
            .entry(section.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match entry.as_table_mut() {
            Some(t) => {
                t.insert(key.to_string(), parsed);
                problems.set_env(format!("{section}.{key}"), &name);
                text.insert(format!("{section}.{key}"), value);
            }
            None => problems.push(format!("{name}: [{section}] is not a table in the file")),
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use crate::config::tests::env;
    use crate::config::Settings;
    use crate::output::elasticsearch::settings::EsAuth;

    #[test]
    fn environment_overrides_section_keys_with_typed_values() {
        let s = Settings::load(
            None,
            env(&[
                ("LUMBERD_SERVER_LISTEN", "127.0.0.1:0"),
                ("LUMBERD_SERVER_MAX_CONNECTIONS", "7"),
                ("LUMBERD_OUTPUT_DATA_DIR", "/tmp/x"),
                ("LUMBERD_CONFIG", "ignored.toml"),
                ("PATH", "/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(s.server.listen.to_string(), "127.0.0.1:0");
        assert_eq!(s.server.max_connections, 7);
        assert_eq!(s.output.file.data_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn string_keys_from_the_environment_stay_strings_when_they_read_as_numbers_or_booleans() {
        let s = Settings::load(
            None,
            env(&[
                ("LUMBERD_OUTPUT_ELASTICSEARCH", "http://127.0.0.1:9200"),
                ("LUMBERD_OUTPUT_USERNAME", "1001"),
                ("LUMBERD_OUTPUT_PASSWORD", "true"),
            ]),
        )
        .unwrap();
        let es = s.output.elasticsearch.unwrap();
        assert!(
            matches!(&es.auth, EsAuth::Basic { username, password }
                if username == "1001" && password == "true"),
            "{:?}",
            es.auth
        );
        // A number where a number belongs is still a number, and a wrong type in a
        // file is still an error.
        let typed = Settings::load(None, env(&[("LUMBERD_SERVER_MAX_CONNECTIONS", "12")]));
        assert_eq!(typed.unwrap().server.max_connections, 12);
    }

    #[test]
    fn a_value_from_the_environment_is_named_by_its_variable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lumberd.toml");
        std::fs::write(&path, "[server]\nkeepalive_interval = \"5s\"\n").unwrap();
        let err = Settings::load(
            Some(&path),
            env(&[
                ("LUMBERD_SERVER_KEEPALIVE_INTERVAL", "45s"),
                ("LUMBERD_OUTPUT_QUEUE_BATCHES", "none"),
            ]),
        )
        .unwrap_err();
        for want in [
            "server.keepalive_interval: must be under Filebeat's 30 s timeout, set by LUMBERD_SERVER_KEEPALIVE_INTERVAL",
            "output.queue_batches: invalid type: string \"none\", expected usize, set by LUMBERD_OUTPUT_QUEUE_BATCHES",
        ] {
            assert!(
                err.problems.iter().any(|p| p == want),
                "expected {want:?} in:\n{err}"
            );
        }
    }

    #[test]
    fn only_the_pipeline_index_and_fingerprint_come_from_the_environment() {
        let s = Settings::load(
            None,
            env(&[
                ("LUMBERD_PIPELINE_INDEX", "2025"),
                ("LUMBERD_PIPELINE_FINGERPRINT", ""),
            ]),
        )
        .unwrap();
        assert_eq!(s.pipeline.index.source(), "2025", "taken as written");
        assert!(s.pipeline.fingerprint.is_none(), "empty turns ids off");
        let err = Settings::load(None, env(&[("LUMBERD_PIPELINE_FILTER", "[]")])).unwrap_err();
        assert!(
            err.problems[0].starts_with("pipeline.filter: cannot be set from the environment"),
            "{err}"
        );
    }
}
