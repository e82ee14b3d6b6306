//! `lumberd import-logstash` against the corpus in `tests/logstash_corpus/`: each
//! `NN-name.conf` has its expected translation (`.toml`) or refusals (`.refused`); every
//! translation passes `lumberd check-config`. The seed deployment's logstash.conf
//! imports to the built-in default pipeline and gives byte-identical output on the
//! golden corpus. `LUMBERD_BLESS=1` rewrites the expected files (review the diff).

mod support;

use std::fs;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use chrono::{TimeZone, Utc};
use lumberd::config::Settings;
use lumberd::logstash::import;
use lumberd::pipeline::{Pipeline, PipelineSettings, Scratch};
use lumberd::record::Origin;
use support::certs::{Ca, Validity};
use support::lumberd::lumberd_command;
use support::repo_root;

fn corpus_dir() -> PathBuf {
    repo_root().join("tests/logstash_corpus")
}

fn cases() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(corpus_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "conf"))
        .collect();
    v.sort();
    v
}

fn translate(conf: &Path) -> lumberd::logstash::Import {
    let name = conf.file_name().unwrap().to_string_lossy().to_string();
    import(&[(name, fs::read_to_string(conf).unwrap())])
}

/// Certificates for the cases whose TLS paths are `@CERTS@/...`.
fn certs(dir: &Path) {
    let ca = Ca::new("corpus CA");
    ca.write(dir, "ca.crt");
    let server = ca.server(dir, "server", Validity::Current);
    for (from, to) in [(&server.cert, "server.crt"), (&server.key, "server.key")] {
        if *from != dir.join(to) {
            fs::copy(from, dir.join(to)).unwrap();
        }
    }
}

fn check_config(toml: &str, dir: &Path) -> std::process::Output {
    let path = dir.join("imported.toml");
    fs::write(&path, toml.replace("@CERTS@", &dir.display().to_string())).unwrap();
    lumberd_command()
        .arg("check-config")
        .arg(&path)
        .env_remove("LUMBERD_CONFIG")
        .output()
        .unwrap()
}

#[test]
fn every_corpus_case_translates_or_refuses_as_expected_and_passes_check_config() {
    let bless = std::env::var_os("LUMBERD_BLESS").is_some();
    let tmp = tempfile::tempdir().unwrap();
    certs(tmp.path());
    let all = cases();
    assert!(all.len() >= 20, "the corpus shrank to {} cases", all.len());
    let (mut translated, mut refused) = (0, 0);
    let mut failures = String::new();
    for conf in &all {
        let out = translate(conf);
        let toml_path = conf.with_extension("toml");
        let refused_path = conf.with_extension("refused");
        let refusals: String = out.refusals.iter().map(|r| format!("{r}\n")).collect();
        if bless {
            let _ = fs::remove_file(&toml_path);
            let _ = fs::remove_file(&refused_path);
            if out.refusals.is_empty() {
                fs::write(&toml_path, &out.toml).unwrap();
            } else {
                fs::write(&refused_path, &refusals).unwrap();
            }
        }
        let name = conf.file_name().unwrap().to_string_lossy();
        if let Ok(want) = fs::read_to_string(&refused_path) {
            refused += 1;
            if refusals != want {
                failures.push_str(&format!("{name}: refusals\n{refusals}want\n{want}\n"));
            }
            continue;
        }
        let want = fs::read_to_string(&toml_path).unwrap_or_else(|_| {
            panic!("{name}: no .toml or .refused next to it (LUMBERD_BLESS=1)")
        });
        translated += 1;
        if !out.refusals.is_empty() {
            failures.push_str(&format!("{name}: unexpected refusals\n{refusals}"));
            continue;
        }
        if out.toml != want {
            failures.push_str(&format!(
                "{name}: translation differs\n--- got\n{}--- want\n{want}\n",
                out.toml
            ));
            continue;
        }
        let checked = check_config(&out.toml, tmp.path());
        if !checked.status.success() {
            failures.push_str(&format!(
                "{name}: check-config rejected the translation: {}\n{}\n",
                String::from_utf8_lossy(&checked.stderr),
                out.toml
            ));
        }
    }
    assert!(failures.is_empty(), "{failures}");
    assert!(
        translated >= 12 && refused >= 8,
        "{translated} translated, {refused} refused"
    );
}

#[test]
fn seed_logstash_conf_imports_to_the_built_in_default_pipeline() {
    let out = translate(&corpus_dir().join("01-seed.conf"));
    assert!(out.refusals.is_empty(), "{:?}", out.refusals);
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("seed.toml");
    fs::write(&path, &out.toml).unwrap();
    let settings = Settings::load(Some(&path), Vec::<(String, String)>::new())
        .unwrap_or_else(|e| panic!("{e}\n{}", out.toml));
    let default = PipelineSettings::qwen();
    // The pipeline types carry compiled patterns; their Debug forms show every setting.
    assert_eq!(
        format!("{:#?}", settings.pipeline.filters),
        format!("{:#?}", default.filters),
        "filters differ from the built-in default"
    );
    assert_eq!(settings.pipeline.index.source(), default.index.source());
    assert_eq!(
        format!("{:?}", settings.pipeline.fingerprint),
        format!("{:?}", default.fingerprint)
    );
    assert_eq!(
        format!("{:?}", settings.pipeline.metrics),
        format!("{:?}", default.metrics)
    );
    assert_eq!(settings.server.listen.to_string(), "0.0.0.0:5044");
    let es = settings
        .output
        .elasticsearch
        .expect("the seed's output is Elasticsearch");
    assert_eq!(es.hosts, ["http://elasticsearch:9200"]);
}

#[test]
fn golden_corpus_through_the_imported_seed_config_is_byte_identical_to_the_default() {
    let out = translate(&corpus_dir().join("01-seed.conf"));
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("seed.toml");
    fs::write(&path, &out.toml).unwrap();
    let settings = Settings::load(Some(&path), Vec::<(String, String)>::new()).unwrap();
    let imported = Pipeline::new(&settings.pipeline, &prometheus::Registry::new()).unwrap();
    let default = Pipeline::default();
    let origin = Origin::plain(
        "127.0.0.1:5044".parse().unwrap(),
        Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap(),
    );
    let inputs = fs::read_to_string(repo_root().join("tests/corpus/inputs.ndjson")).unwrap();
    let (mut a, mut b) = (Scratch::default(), Scratch::default());
    let mut n = 0;
    for (i, line) in inputs.lines().enumerate() {
        let payload = Bytes::from(line.to_string());
        let x = imported.process_json(payload.clone(), &origin, &mut a);
        let y = default.process_json(payload, &origin, &mut b);
        assert_eq!(
            x.failures(),
            y.failures(),
            "corpus line {}: the imported pipeline tags other failures than the default",
            i + 1
        );
        let (x, y) = (
            x.into_record().expect("kept"),
            y.into_record().expect("kept"),
        );
        assert_eq!(
            (&x.doc, &x.dest, x.id, x.kind()),
            (&y.doc, &y.dest, y.id, y.kind()),
            "corpus line {}: the imported pipeline differs from the default",
            i + 1
        );
        n += 1;
    }
    assert!(n >= 100, "only {n} corpus events");
}

#[test]
fn cli_refuses_with_the_plugin_and_line_and_exit_64_and_partial_prints_the_rest() {
    let conf = corpus_dir().join("18-refuse-ruby.conf");
    let out = lumberd_command()
        .arg("import-logstash")
        .arg(&conf)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("18-refuse-ruby.conf:4: ruby:"), "{stderr}");
    assert!(out.stdout.is_empty(), "nothing on stdout without --partial");

    let out = lumberd_command()
        .arg("import-logstash")
        .arg("--partial")
        .arg(&conf)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(64),
        "a partial translation is still not a migration"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("# REFUSED 18-refuse-ruby.conf:4: ruby:") || stdout.contains("# REFUSED"),
        "{stdout}"
    );
    assert!(
        stdout.contains("json = { source = \"message\" }"),
        "{stdout}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let checked = check_config(&stdout, tmp.path());
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );

    let out = lumberd_command()
        .arg("import-logstash")
        .arg(corpus_dir().join("01-seed.conf"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("[[pipeline.filter]]"));
}

#[test]
fn credentials_are_never_written_into_the_translation() {
    let text = r#"output { elasticsearch { hosts => ["http://es:9200"] user => "elastic" password => "s3cr3t-literal" api_key => "${ES_API_KEY}" } }"#;
    let out = import(&[("x.conf".into(), text.into())]);
    assert!(out.refusals.is_empty(), "{:?}", out.refusals);
    assert!(!out.toml.contains("s3cr3t-literal"), "{}", out.toml);
    assert!(out.toml.contains("LUMBERD_OUTPUT_PASSWORD"), "{}", out.toml);
    assert!(
        out.toml.contains("LUMBERD_OUTPUT_API_KEY") && out.toml.contains("${ES_API_KEY}"),
        "{}",
        out.toml
    );
}
