//! `[spool]`: the disk spool in front of the Elasticsearch output, into
//! [`SpooledSettings`] (the engine's [`SpoolSettings`] and the readiness mark). Off
//! when `dir` is empty, which keeps the ACK-after-indexed contract.

use std::path::PathBuf;

use serde::Deserialize;

use super::output::OutputSettings;
use super::problems::Problems;
use super::raw::size;
use crate::output::spooled::SpooledSettings;
use crate::server::settings::ServerSettings;
use crate::spool::{
    SpoolSettings, DEFAULT_DIRECT_IO, DEFAULT_MAX_BYTES, DEFAULT_MEMORY_BYTES,
    DEFAULT_SEGMENT_BYTES,
};

/// No spool: a window is acknowledged once Elasticsearch has indexed it.
pub const DEFAULT_SPOOL_DIR: &str = "";
/// `/readyz` turns not-ready past this fraction of `max_bytes`: the Service sends new
/// connections to a replica with room while the last 10% (400 MiB by default) still
/// takes what the open connections send.
pub const DEFAULT_SPOOL_HIGH_WATER: f64 = 0.9;
/// Room in a record beyond twice the largest frame: a pipeline dead letter holds the
/// raw payload (hex doubles it) plus its reason, peer and time; an event adds its
/// index, id and the fields the pipeline sets.
const RECORD_OVERHEAD: u64 = 64 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawSpool {
    dir: PathBuf,
    #[serde(deserialize_with = "size")]
    max_bytes: u64,
    #[serde(deserialize_with = "size")]
    segment_bytes: u64,
    #[serde(deserialize_with = "size")]
    memory_bytes: u64,
    high_water: f64,
    direct_io: bool,
}

impl Default for RawSpool {
    fn default() -> Self {
        RawSpool {
            dir: DEFAULT_SPOOL_DIR.into(),
            max_bytes: DEFAULT_MAX_BYTES,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            memory_bytes: DEFAULT_MEMORY_BYTES,
            high_water: DEFAULT_SPOOL_HIGH_WATER,
            direct_io: DEFAULT_DIRECT_IO,
        }
    }
}

/// `None` when the spool is off, or when it would have no effect (the file output is
/// already durable on disk: a warning says so).
pub(super) fn validate(
    s: RawSpool,
    server: &ServerSettings,
    output: &OutputSettings,
    p: &mut Problems,
) -> Option<SpooledSettings> {
    if s.dir.as_os_str().is_empty() {
        return None;
    }
    if output.elasticsearch.is_none() {
        p.warn(format!(
            "spool.dir = {:?} has no effect: the file output (no output.elasticsearch) is \
             already durable on disk",
            s.dir
        ));
        return None;
    }
    if !(s.high_water > 0.0 && s.high_water <= 1.0) {
        p.key(
            "spool.high_water",
            format!("{} is not a fraction in (0, 1]", s.high_water),
        );
    }
    // Any event the server accepts must fit one record, and one record one segment.
    let max_record = 2 * u64::from(server.limits.max_frame_bytes) + RECORD_OVERHEAD;
    let settings = SpoolSettings {
        max_record_bytes: max_record.min(u64::from(u32::MAX)) as u32,
        max_bytes: s.max_bytes,
        segment_bytes: s.segment_bytes,
        memory_bytes: s.memory_bytes,
        direct_io: s.direct_io,
        ..SpoolSettings::new(s.dir)
    };
    if s.segment_bytes < max_record + 4096 {
        p.key(
            "spool.segment_bytes",
            format!(
                "{} cannot hold the largest record ({max_record} bytes: twice \
                 server.max_frame_bytes and {RECORD_OVERHEAD} more)",
                s.segment_bytes
            ),
        );
    } else if let Err(e) = settings.validate() {
        p.section("spool", e);
    }
    Some(SpooledSettings {
        spool: settings,
        high_water: s.high_water,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::tests::env;
    use crate::config::Settings;

    const ES: (&str, &str) = ("LUMBERD_OUTPUT_ELASTICSEARCH", "http://127.0.0.1:9200");

    #[test]
    fn spool_is_off_by_default_and_on_with_a_dir_and_sizes_with_units() {
        let off = Settings::load(None, env(&[ES])).unwrap();
        assert!(off.spool.is_none());
        let on = Settings::load(
            None,
            env(&[
                ES,
                ("LUMBERD_SPOOL_DIR", "/var/lib/lumberd/spool"),
                ("LUMBERD_SPOOL_MAX_BYTES", "8GiB"),
                ("LUMBERD_SPOOL_HIGH_WATER", "0.5"),
                ("LUMBERD_SPOOL_MEMORY_BYTES", "0"),
                ("LUMBERD_SPOOL_DIRECT_IO", "false"),
            ]),
        )
        .unwrap();
        let s = on.spool.expect("spool on");
        assert_eq!(s.spool.max_bytes, 8 << 30);
        assert_eq!(s.spool.memory_bytes, 0, "0 turns the fast path off");
        assert!(
            !s.spool.direct_io,
            "direct_io = false writes through the page cache"
        );
        let default = Settings::load(None, env(&[ES, ("LUMBERD_SPOOL_DIR", "/var/spool/l")]))
            .unwrap()
            .spool
            .expect("spool on");
        assert!(default.spool.direct_io, "direct_io is on by default");
        assert_eq!(s.spool.segment_bytes, crate::spool::DEFAULT_SEGMENT_BYTES);
        assert_eq!(s.high_water, 0.5);
        assert!(on.warnings.is_empty(), "{:?}", on.warnings);
    }

    #[test]
    fn spool_with_the_file_output_has_no_effect_and_says_so() {
        let s = Settings::load(None, env(&[("LUMBERD_SPOOL_DIR", "/tmp/spool")])).unwrap();
        assert!(s.spool.is_none());
        assert!(
            s.warnings.iter().any(|w| w.contains("has no effect")),
            "{:?}",
            s.warnings
        );
    }

    #[test]
    fn spool_sizes_that_cannot_work_are_refused_with_their_key() {
        let err = Settings::load(
            None,
            env(&[
                ES,
                ("LUMBERD_SPOOL_DIR", "/tmp/spool"),
                ("LUMBERD_SPOOL_SEGMENT_BYTES", "1MiB"),
                ("LUMBERD_SPOOL_MAX_BYTES", "lots"),
                ("LUMBERD_SPOOL_HIGH_WATER", "1.5"),
            ]),
        )
        .unwrap_err();
        for key in ["spool.segment_bytes", "spool.max_bytes", "spool.high_water"] {
            assert!(
                err.problems.iter().any(|p| p.starts_with(key)),
                "expected a problem with {key}: {err}"
            );
        }
        let small = Settings::load(
            None,
            env(&[
                ES,
                ("LUMBERD_SPOOL_DIR", "/tmp/spool"),
                ("LUMBERD_SPOOL_MAX_BYTES", "64MiB"),
            ]),
        )
        .unwrap_err();
        assert!(
            small
                .problems
                .iter()
                .any(|p| p.contains("at least two segments")),
            "{small}"
        );
    }
}
