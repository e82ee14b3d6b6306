//! `check-config` on `[spool]`: a setting without effect is a warning (exit 0), a
//! directory that cannot be written is refused (exit 64) naming the key, before anything
//! is bound.

mod support;

use std::process::Output;

use support::lumberd::lumberd_command;

fn check_config(toml: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lumberd.toml");
    std::fs::write(&path, toml).unwrap();
    lumberd_command()
        .arg("check-config")
        .arg(&path)
        .output()
        .expect("run lumberd check-config")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn check_config_warns_that_a_spool_has_no_effect_with_the_file_output() {
    let spool = tempfile::tempdir().unwrap();
    let out = check_config(&format!("[spool]\ndir = {:?}\n", spool.path()));
    let stderr = text(&out.stderr);
    assert!(
        out.status.success()
            && stderr.contains("warning: spool.dir")
            && stderr.contains("no effect"),
        "exit {}; stderr: {stderr}",
        out.status
    );
}

#[test]
fn check_config_refuses_a_spool_directory_that_cannot_be_created() {
    let dir = tempfile::tempdir().unwrap();
    // Under a regular file: no directory can be made there, whoever runs the test
    // (root writes through permission bits, not through a file).
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let out = check_config(&format!(
        "[output]\nelasticsearch = [\"http://127.0.0.1:9200\"]\n[spool]\ndir = {:?}\n",
        file.join("spool")
    ));
    let stderr = text(&out.stderr);
    assert!(
        out.status.code() == Some(64) && stderr.contains("spool.dir") && stderr.contains("a-file"),
        "exit {}; stderr: {stderr}",
        out.status
    );
}

#[test]
fn check_config_accepts_a_spool_it_could_create_or_write_and_changes_nothing() {
    let spool = tempfile::tempdir().unwrap();
    let out = check_config(&format!(
        "[output]\nelasticsearch = [\"http://127.0.0.1:9200\"]\n[spool]\ndir = {:?}\nmax_bytes = \"1GiB\"\n",
        spool.path().join("new")
    ));
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "exit {}; stderr: {}",
        out.status,
        text(&out.stderr)
    );
    assert!(
        !spool.path().join("new").exists(),
        "check-config creates nothing (serve creates the directory)"
    );
    let out = check_config(&format!(
        "[output]\nelasticsearch = [\"http://127.0.0.1:9200\"]\n[spool]\ndir = {:?}\n",
        spool.path()
    ));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read_dir(spool.path()).unwrap().count(),
        0,
        "check-config of an existing directory writes into it and leaves nothing"
    );
}
