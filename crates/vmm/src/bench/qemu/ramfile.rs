//! The files behind QEMU's guest RAM (`memory-backend-file`): the source's filled with
//! seeded pseudo-random bytes, so that QEMU must send every page with its contents as our
//! migration does (all-zero RAM goes as "duplicate" markers in milliseconds, which is no fair
//! peer, `benchmarks.md`); the destination's empty. After the migration the two files are
//! compared page by page, which checks that QEMU moved what it says it moved.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use super::error::QemuError;
use crate::bench::stats::SplitMix64;

/// Bytes generated or compared per step.
const BLOCK: usize = 1 << 20;
/// The page size the comparison counts in.
const PAGE: usize = 4096;

fn file_error(step: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> QemuError {
    let path = path.to_path_buf();
    move |source| QemuError::File { step, path, source }
}

/// Creates `path` holding `bytes` pseudo-random bytes from SplitMix64 seeded with `seed`.
pub fn fill_random(path: &Path, bytes: u64, seed: u64) -> Result<(), QemuError> {
    let file = File::create(path).map_err(file_error("creating", path))?;
    let mut out = BufWriter::with_capacity(BLOCK, file);
    let mut rng = SplitMix64::new(seed);
    let mut block = vec![0u8; BLOCK];
    let mut left = bytes;
    while left > 0 {
        rng.fill(&mut block);
        let n = BLOCK.min(usize::try_from(left).unwrap_or(usize::MAX));
        out.write_all(&block[..n])
            .map_err(file_error("filling", path))?;
        left -= n as u64;
    }
    out.into_inner()
        .map_err(|e| file_error("filling", path)(e.into_error()))?
        .sync_all()
        .map_err(file_error("filling", path))
}

/// Creates `path` as a sparse file of `bytes` bytes: QEMU maps it and the migration fills it.
pub fn create_empty(path: &Path, bytes: u64) -> Result<(), QemuError> {
    File::create(path)
        .and_then(|f| f.set_len(bytes))
        .map_err(file_error("creating", path))
}

/// How many 4 KiB pages differ between `a` and `b`; a page that one file has in full and the
/// other only in part, or not at all, differs.
pub fn differing_pages(a: &Path, b: &Path) -> Result<u64, QemuError> {
    let open = |path: &Path| {
        File::open(path)
            .map(|f| BufReader::with_capacity(BLOCK, f))
            .map_err(file_error("opening", path))
    };
    let (mut fa, mut fb) = (open(a)?, open(b)?);
    let (mut pa, mut pb) = ([0u8; PAGE], [0u8; PAGE]);
    let mut differing = 0u64;
    loop {
        let na = read_full(&mut fa, &mut pa).map_err(file_error("reading", a))?;
        let nb = read_full(&mut fb, &mut pb).map_err(file_error("reading", b))?;
        if na == 0 && nb == 0 {
            return Ok(differing);
        }
        if na != nb || pa[..na] != pb[..nb] {
            differing += 1;
        }
    }
}

/// Reads until `buf` is full or the file ends; the bytes read.
fn read_full(file: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::qemu::process::WorkDir;

    #[test]
    fn random_files_are_seeded_and_not_zero() {
        let dir = WorkDir::create(&std::env::temp_dir()).unwrap();
        let (a, b, c) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("c"),
        );
        let size = 3 * BLOCK as u64 + 5 * PAGE as u64;
        fill_random(&a, size, 7).unwrap();
        fill_random(&b, size, 7).unwrap();
        fill_random(&c, size, 8).unwrap();
        assert_eq!(std::fs::metadata(&a).unwrap().len(), size);
        assert_eq!(differing_pages(&a, &b).unwrap(), 0);
        assert_eq!(differing_pages(&a, &c).unwrap(), size / PAGE as u64);
        let bytes = std::fs::read(&a).unwrap();
        assert!(bytes.chunks(PAGE).all(|page| page.iter().any(|&x| x != 0)));
    }

    #[test]
    fn an_empty_file_differs_everywhere_and_lengths_count() {
        let dir = WorkDir::create(&std::env::temp_dir()).unwrap();
        let (full, empty, short) = (
            dir.path().join("full"),
            dir.path().join("empty"),
            dir.path().join("short"),
        );
        let size = 2 * BLOCK as u64;
        fill_random(&full, size, 1).unwrap();
        create_empty(&empty, size).unwrap();
        assert_eq!(std::fs::metadata(&empty).unwrap().len(), size);
        assert_eq!(differing_pages(&full, &empty).unwrap(), size / PAGE as u64);
        fill_random(&short, size / 2 + 1, 1).unwrap();
        // The first half matches, then one partial page and the rest are missing.
        assert_eq!(
            differing_pages(&full, &short).unwrap(),
            size / 2 / PAGE as u64
        );
    }
}
