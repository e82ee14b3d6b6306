//! The read position: where the consumer's acknowledged records end, saved with one
//! fsync per `ack` and read back at open.
//!
//! The file holds two 48-byte slots, 4 KiB apart so that no single sector write can
//! touch both; each save overwrites the older slot in place (no rename, no directory
//! fsync), with a generation number and a checksum. A save torn by a crash leaves the
//! other slot intact: the position goes back one `ack` at most, which replays records
//! already delivered (the document ids make them duplicates, never copies), never skips
//! one that was not.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

use twox_hash::XxHash3_64;

pub const POSITION_FILE: &str = "read-position";
const MAGIC: [u8; 8] = *b"LBDSPOS1";
const SLOT_BYTES: usize = 48;
const SLOT_OFFSETS: [u64; 2] = [0, 4096];
const FILE_BYTES: u64 = SLOT_OFFSETS[1] + SLOT_BYTES as u64;

/// Where reading resumes: the first record not acknowledged has a sequence number of at
/// least `next_seq`, and is at or after byte `offset` of segment `segment`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadPosition {
    pub next_seq: u64,
    pub segment: u64,
    pub offset: u64,
}

/// What the position file held at open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loaded {
    Found(ReadPosition),
    /// No file: a new spool, or one whose file was removed.
    Missing,
    /// A file with no valid slot.
    Invalid,
}

fn encode_slot(generation: u64, p: &ReadPosition) -> [u8; SLOT_BYTES] {
    let mut s = [0; SLOT_BYTES];
    s[0..8].copy_from_slice(&MAGIC);
    s[8..16].copy_from_slice(&generation.to_le_bytes());
    s[16..24].copy_from_slice(&p.next_seq.to_le_bytes());
    s[24..32].copy_from_slice(&p.segment.to_le_bytes());
    s[32..40].copy_from_slice(&p.offset.to_le_bytes());
    let check = XxHash3_64::oneshot(&s[..40]);
    s[40..48].copy_from_slice(&check.to_le_bytes());
    s
}

fn decode_slot(s: &[u8]) -> Option<(u64, ReadPosition)> {
    let s = s.get(..SLOT_BYTES)?;
    let u64_at = |i: usize| u64::from_le_bytes(s[i..i + 8].try_into().expect("8 bytes"));
    if s[0..8] != MAGIC || XxHash3_64::oneshot(&s[..40]) != u64_at(40) {
        return None;
    }
    Some((
        u64_at(8),
        ReadPosition {
            next_seq: u64_at(16),
            segment: u64_at(24),
            offset: u64_at(32),
        },
    ))
}

/// The newest valid slot of a position file's bytes.
pub fn decode_file(bytes: &[u8]) -> Option<(u64, ReadPosition)> {
    SLOT_OFFSETS
        .iter()
        .filter_map(|&o| decode_slot(bytes.get(o as usize..)?))
        .max_by_key(|(generation, _)| *generation)
}

/// The open position file.
#[derive(Debug)]
pub struct PositionFile {
    file: File,
    generation: u64,
}

impl PositionFile {
    /// Opens (creating when missing) the position file in `dir`. The caller fsyncs the
    /// directory once after the open, for a file created here.
    pub fn open(dir: &Path) -> io::Result<(PositionFile, Loaded)> {
        let path = dir.join(POSITION_FILE);
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let mut bytes = Vec::new();
        (&file).take(FILE_BYTES).read_to_end(&mut bytes)?;
        if (bytes.len() as u64) < FILE_BYTES {
            // Allocate the rest (a hole would need space at the first save there).
            let zeros = vec![0; FILE_BYTES as usize - bytes.len()];
            file.write_all_at(&zeros, bytes.len() as u64)?;
            file.sync_data()?;
        }
        let found = decode_file(&bytes);
        let loaded = match found {
            Some((_, p)) => Loaded::Found(p),
            None if existed => Loaded::Invalid,
            None => Loaded::Missing,
        };
        Ok((
            PositionFile {
                file,
                generation: found.map_or(0, |(g, _)| g),
            },
            loaded,
        ))
    }

    /// Saves `p` durably (one `fdatasync`) over the older slot.
    pub fn save(&mut self, p: &ReadPosition) -> io::Result<()> {
        let generation = self.generation + 1;
        let slot = encode_slot(generation, p);
        self.file
            .write_all_at(&slot, SLOT_OFFSETS[(generation % 2) as usize])?;
        self.file.sync_data()?;
        self.generation = generation;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(n: u64) -> ReadPosition {
        ReadPosition {
            next_seq: n,
            segment: n / 10,
            offset: n * 3,
        }
    }

    #[test]
    fn a_saved_position_is_loaded_back() {
        let dir = tempfile::tempdir().unwrap();
        let (mut f, loaded) = PositionFile::open(dir.path()).unwrap();
        assert_eq!(loaded, Loaded::Missing);
        for n in 1..=5 {
            f.save(&pos(n)).unwrap();
        }
        drop(f);
        let (mut f, loaded) = PositionFile::open(dir.path()).unwrap();
        assert_eq!(loaded, Loaded::Found(pos(5)));
        f.save(&pos(6)).unwrap();
        assert_eq!(
            PositionFile::open(dir.path()).unwrap().1,
            Loaded::Found(pos(6)),
            "generations continue across opens"
        );
    }

    #[test]
    fn a_torn_save_falls_back_to_the_previous_position() {
        let dir = tempfile::tempdir().unwrap();
        let (mut f, _) = PositionFile::open(dir.path()).unwrap();
        f.save(&pos(1)).unwrap();
        f.save(&pos(2)).unwrap();
        drop(f);
        let path = dir.path().join(POSITION_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        // Generation 2 went to slot 0; tear it.
        bytes[20] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(
            PositionFile::open(dir.path()).unwrap().1,
            Loaded::Found(pos(1))
        );
    }

    #[test]
    fn a_file_of_garbage_is_invalid_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(POSITION_FILE), b"not a position at all").unwrap();
        let (mut f, loaded) = PositionFile::open(dir.path()).unwrap();
        assert_eq!(loaded, Loaded::Invalid);
        f.save(&pos(9)).unwrap();
        assert_eq!(
            PositionFile::open(dir.path()).unwrap().1,
            Loaded::Found(pos(9))
        );
    }
}
