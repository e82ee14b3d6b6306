//! Writing segments with `O_DIRECT`: the frames are copied once, in user space, into a
//! block-aligned buffer and go from there to the disk, instead of being copied by the
//! kernel into the page cache and written back from it. On the 2-core VMs this project
//! measures on, the page-cache path cost ~1.3 us of CPU per 1.3 KB record (the copy,
//! the allocation of new pages, ext4's delayed allocation) and the direct one ~0.25 us
//! (benches/README.md, "Issue 13, direct I/O").
//!
//! The buffer mirrors the segment from the block that holds its last written byte. A
//! commit writes every block up to the end, the last one padded with zeros; the next
//! commit rewrites that block with the same bytes and more. A rewrite torn by a crash
//! can therefore only mix the old and the new contents of bytes after the durable ones,
//! and the durable bytes are the same in both. The scanner reads zeros that run to the
//! end of a segment as this padding, not as a torn tail (scan.rs).

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// Direct I/O's unit: the offset, length and address of every write are multiples of
/// it. 4096 is the logical block size of nearly every disk and a multiple of the rest
/// (512-byte sectors).
pub const BLOCK: usize = 4096;
/// Bytes gathered before full blocks are written mid-round: large writes (a round of
/// 512 ~1.3 KB records is ~680 KB), and 1 MiB of memory per segment being written.
pub const BUFFER_BYTES: usize = 1024 * 1024;

fn round_up(n: usize) -> usize {
    n.div_ceil(BLOCK) * BLOCK
}

/// Opens a segment for direct writes (`create`: a new one, failing if it exists).
pub fn open(path: &Path, create: bool) -> io::Result<File> {
    let mut options = File::options();
    options
        .write(true)
        .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32);
    options.create_new(create).open(path)
}

/// Whether the filesystem under `dir` takes direct writes of [`BLOCK`]-aligned blocks:
/// one such write into `probe` (a file of the spool's own whose contents nothing
/// reads). Some filesystems refuse `O_DIRECT` at open (tmpfs before Linux 6.6), some only at
/// the first write; either answers `false`, and the spool writes through the page cache.
pub fn supported(probe: &Path) -> bool {
    let Ok(file) = File::options()
        .write(true)
        .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
        .open(probe)
    else {
        return false;
    };
    let block = Aligned::new(BLOCK);
    file.write_all_at(block.blocks(BLOCK), 0).is_ok() && file.set_len(0).is_ok()
}

/// Zeroed memory whose usable part starts at a [`BLOCK`]-aligned address: a `Vec`
/// over-allocated by one block and never grown, so no allocator of our own and no
/// `unsafe`.
#[derive(Debug)]
struct Aligned {
    mem: Vec<u8>,
    start: usize,
}

impl Aligned {
    fn new(capacity: usize) -> Aligned {
        let mem = vec![0; capacity + BLOCK];
        let start = mem.as_ptr().align_offset(BLOCK);
        Aligned { mem, start }
    }

    fn capacity(&self) -> usize {
        self.mem.len() - BLOCK
    }

    fn bytes_mut(&mut self, range: std::ops::Range<usize>) -> &mut [u8] {
        &mut self.mem[self.start + range.start..self.start + range.end]
    }

    /// The first `n` bytes, `n` a multiple of [`BLOCK`].
    fn blocks(&self, n: usize) -> &[u8] {
        &self.mem[self.start..self.start + n]
    }
}

/// The bytes of a segment from a block boundary on, as they are to be in the file:
/// the first `on_disk` of them already are.
#[derive(Debug)]
pub struct DirectBuf {
    mem: Aligned,
    /// File offset of the first byte held, a multiple of [`BLOCK`].
    file_at: u64,
    len: usize,
    on_disk: usize,
}

impl DirectBuf {
    /// A buffer for a segment with nothing in it yet.
    pub fn new() -> DirectBuf {
        DirectBuf {
            mem: Aligned::new(BUFFER_BYTES),
            file_at: 0,
            len: 0,
            on_disk: 0,
        }
    }

    /// A buffer continuing a segment whose first `end` bytes are in the file: the
    /// block holding its end is read back, since the next write rewrites it whole.
    pub fn resume(path: &Path, end: u64) -> io::Result<DirectBuf> {
        let mut buf = DirectBuf::new();
        buf.file_at = end / BLOCK as u64 * BLOCK as u64;
        let carried = (end - buf.file_at) as usize;
        if carried > 0 {
            File::open(path)?.read_exact_at(buf.mem.bytes_mut(0..carried), buf.file_at)?;
        }
        buf.len = carried;
        buf.on_disk = carried;
        Ok(buf)
    }

    /// File offset just past the last byte appended.
    pub fn size(&self) -> u64 {
        self.file_at + self.len as u64
    }

    /// File offset just past the last byte written to the file.
    pub fn written(&self) -> u64 {
        self.file_at + self.on_disk as u64
    }

    /// Appends `bytes`, writing full blocks to `file` first when the buffer has no
    /// room (a buffer smaller than one record grows to hold it).
    pub fn extend(&mut self, file: &File, bytes: &[u8]) -> io::Result<()> {
        self.extend_all(file, [bytes, &[]]).map(drop)
    }

    /// Appends `parts` one after the other, contiguous in the buffer, and returns them
    /// there: none of their bytes is in the file yet, so the caller may still change
    /// them (the writer finishes a frame's header over the bytes it has just copied).
    pub fn extend_all(&mut self, file: &File, parts: [&[u8]; 2]) -> io::Result<&mut [u8]> {
        let n = parts[0].len() + parts[1].len();
        if self.len + n > self.mem.capacity() {
            // Full blocks only: the partial one, which `parts` continue, stays.
            self.write_out(file, false)?;
            if self.len + n > self.mem.capacity() {
                let mut bigger = Aligned::new(round_up(self.len + n));
                bigger
                    .bytes_mut(0..self.len)
                    .copy_from_slice(self.mem.bytes_mut(0..self.len));
                self.mem = bigger;
            }
        }
        let start = self.len;
        for p in parts {
            self.mem
                .bytes_mut(self.len..self.len + p.len())
                .copy_from_slice(p);
            self.len += p.len();
        }
        Ok(self.mem.bytes_mut(start..self.len))
    }

    /// Writes what is not in the file yet: with `pad`, everything (the last block
    /// padded with zeros), else the full blocks only. Keeps the last partial block.
    pub fn write_out(&mut self, file: &File, pad: bool) -> io::Result<()> {
        let full = self.len / BLOCK * BLOCK;
        let n = if pad { round_up(self.len) } else { full };
        if n == 0 || (pad && self.len == self.on_disk) || (!pad && full <= self.on_disk) {
            return Ok(());
        }
        // The padding: bytes past `len` may hold what an earlier round moved away.
        let len = self.len;
        if pad {
            self.mem.bytes_mut(len..n).fill(0);
        }
        file.write_all_at(self.mem.blocks(n), self.file_at)?;
        self.on_disk = if pad { self.len } else { full };
        // The last partial block moves to the front; the next write starts with it.
        let keep = self.len - full;
        let start = self.mem.start;
        self.mem
            .mem
            .copy_within(start + full..start + self.len, start);
        self.file_at += full as u64;
        self.len = keep;
        self.on_disk -= full.min(self.on_disk);
        Ok(())
    }
}

/// A temporary directory whose filesystem takes direct writes, for tests; `None`
/// (and a line saying the test is skipped) where it does not: the spool then writes
/// through the page cache, which the tests also drive with `direct_io = false`.
#[cfg(test)]
pub(crate) fn direct_tempdir() -> Option<tempfile::TempDir> {
    let dir = tempfile::tempdir().unwrap();
    let probe = dir.path().join("probe");
    std::fs::write(&probe, b"").unwrap();
    if supported(&probe) {
        Some(dir)
    } else {
        eprintln!("no O_DIRECT under {}: skipped", dir.path().display());
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_bytes(path: &Path) -> Vec<u8> {
        std::fs::read(path).unwrap()
    }

    fn patterned(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed | 1)
            .collect()
    }

    /// A segment just created for direct writes in a temporary directory, and its
    /// buffer; `None` (the test skipped) where that filesystem refuses direct writes.
    fn fresh_segment() -> Option<(tempfile::TempDir, std::path::PathBuf, File, DirectBuf)> {
        let dir = direct_tempdir()?;
        let path = dir.path().join("seg");
        let file = open(&path, true).unwrap();
        Some((dir, path, file, DirectBuf::new()))
    }

    #[test]
    fn commits_leave_the_appended_bytes_then_zeros_to_a_block_boundary() {
        let Some((_dir, path, file, mut buf)) = fresh_segment() else {
            return;
        };
        let mut expect = Vec::new();
        // Small commits rewrite the partial block; a large one crosses the buffer.
        for (i, n) in [100, 5000, 1, 3 * BUFFER_BYTES + 17, 4096, 0, 77]
            .iter()
            .enumerate()
        {
            let data = patterned(*n, i as u8);
            buf.extend(&file, &data).unwrap();
            expect.extend_from_slice(&data);
            buf.write_out(&file, true).unwrap();
            assert_eq!(buf.written(), expect.len() as u64, "after commit {i}");
            assert_eq!(buf.size(), expect.len() as u64);
            let on_disk = file_bytes(&path);
            assert_eq!(
                on_disk.len(),
                round_up(expect.len()),
                "file length after commit {i}"
            );
            assert!(
                on_disk[..expect.len()] == expect[..],
                "bytes after commit {i}"
            );
            assert!(
                on_disk[expect.len()..].iter().all(|b| *b == 0),
                "padding after commit {i} is not zeros"
            );
        }
    }

    #[test]
    fn a_resumed_segment_keeps_its_bytes_and_continues_after_them() {
        let Some(dir) = direct_tempdir() else { return };
        let path = dir.path().join("seg");
        std::fs::write(&path, patterned(10_000, 7)).unwrap();
        // A segment cut back to 6,000 bytes (a torn tail) and continued.
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(6_000)
            .unwrap();
        let file = open(&path, false).unwrap();
        let mut buf = DirectBuf::resume(&path, 6_000).unwrap();
        assert_eq!((buf.written(), buf.size()), (6_000, 6_000));
        buf.extend(&file, b"more").unwrap();
        buf.write_out(&file, true).unwrap();
        let on_disk = file_bytes(&path);
        assert!(
            on_disk[..6_000] == patterned(10_000, 7)[..6_000],
            "resumed bytes changed"
        );
        assert_eq!(&on_disk[6_000..6_004], b"more");
        assert_eq!(on_disk.len(), 8192);
    }

    #[test]
    fn writing_out_full_blocks_mid_round_keeps_the_partial_one_unwritten() {
        let Some((_dir, path, file, mut buf)) = fresh_segment() else {
            return;
        };
        buf.extend(&file, &patterned(BLOCK + 10, 1)).unwrap();
        buf.write_out(&file, false).unwrap();
        assert_eq!(
            (buf.written(), buf.size()),
            (BLOCK as u64, BLOCK as u64 + 10)
        );
        assert_eq!(file_bytes(&path).len(), BLOCK);
    }

    #[test]
    fn parts_appended_together_are_not_in_the_file_until_written_so_they_may_still_change() {
        let Some((_dir, path, file, mut buf)) = fresh_segment() else {
            return;
        };
        // The first part alone would fill the buffer exactly, and the second make it
        // write its full blocks: appended one by one, the first would go out then,
        // before the caller's change to it.
        let before = patterned(BUFFER_BYTES - 4, 3);
        buf.extend(&file, &before).unwrap();
        let frame = buf.extend_all(&file, [b"head", &[7; 60]]).unwrap();
        assert_eq!(frame.len(), 64);
        frame[..4].copy_from_slice(b"HEAD");
        buf.write_out(&file, true).unwrap();
        let on_disk = file_bytes(&path);
        assert!(
            on_disk[..before.len()] == before[..],
            "bytes before changed"
        );
        assert_eq!(
            &on_disk[before.len()..before.len() + 4],
            b"HEAD",
            "the change made after appending is not what reached the file"
        );
        assert!(on_disk[before.len() + 4..before.len() + 64]
            .iter()
            .all(|b| *b == 7));
    }

    #[test]
    fn a_probe_that_cannot_be_opened_says_unsupported() {
        assert!(!supported(Path::new("/nonexistent-dir/probe")));
    }
}
