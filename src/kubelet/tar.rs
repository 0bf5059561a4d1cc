//! A minimal ustar writer for Docker build contexts.
//!
//! A build context is a tar stream of a few regular files (the Dockerfile and a static binary);
//! the `tar` crate is not in minik's dependency tree, and this is all that is needed: 512-byte
//! POSIX ustar headers, file data padded to 512 bytes, two zero blocks at the end. Entries have a
//! fixed owner (0:0) and mtime (0), so the same files always give the same bytes (and the same
//! digest, which is how `minik image build` knows an image is up to date).

use anyhow::bail;

const BLOCK: usize = 512;

/// An in-memory tar archive being written.
#[derive(Debug, Default)]
pub struct TarWriter {
    buf: Vec<u8>,
}

impl TarWriter {
    pub fn new() -> TarWriter {
        TarWriter::default()
    }

    /// Appends a regular file `name` (a relative path of at most 100 bytes) with `mode` bits.
    pub fn file(&mut self, name: &str, mode: u32, data: &[u8]) -> anyhow::Result<()> {
        if name.is_empty() || name.len() > 100 || name.starts_with('/') || name.contains('\0') {
            bail!("cannot put {name:?} in a tar header (a relative path of 1-100 bytes)");
        }
        let mut h = [0u8; BLOCK];
        h[..name.len()].copy_from_slice(name.as_bytes());
        octal(&mut h[100..108], u64::from(mode & 0o7777));
        octal(&mut h[108..116], 0); // uid
        octal(&mut h[116..124], 0); // gid
        octal(&mut h[124..136], data.len() as u64);
        octal(&mut h[136..148], 0); // mtime
        h[156] = b'0'; // regular file
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[265..269].copy_from_slice(b"root");
        h[297..301].copy_from_slice(b"root");
        // The checksum is computed with its own field as eight spaces.
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        octal(&mut h[148..155], u64::from(sum));
        h[155] = b' ';
        self.buf.extend_from_slice(&h);
        self.buf.extend_from_slice(data);
        let pad = (BLOCK - data.len() % BLOCK) % BLOCK;
        self.buf.resize(self.buf.len() + pad, 0);
        Ok(())
    }

    /// Ends the archive (two zero blocks) and returns its bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.resize(self.buf.len() + 2 * BLOCK, 0);
        self.buf
    }
}

/// Writes `value` as zero-padded octal digits followed by a NUL into `field`.
fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let s = format!("{value:0digits$o}");
    // Values that don't fit are not produced here (sizes < 8 GiB in 11 digits).
    let s = &s.as_bytes()[s.len().saturating_sub(digits)..];
    field[..digits].copy_from_slice(s);
    field[digits] = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_tar_reads_it_back() {
        let mut t = TarWriter::new();
        t.file("Dockerfile", 0o644, b"FROM scratch\n").unwrap();
        t.file("bin", 0o755, &vec![7u8; 1000]).unwrap();
        t.file("empty", 0o644, b"").unwrap();
        let bytes = t.finish();
        assert_eq!(bytes.len() % BLOCK, 0);
        assert_eq!(bytes.len(), 512 + 512 + 512 + 1024 + 512 + 1024);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctx.tar");
        std::fs::write(&path, &bytes).unwrap();
        let out = std::process::Command::new("tar")
            .arg("-tvf")
            .arg(&path)
            .output()
            .expect("tar is installed");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listing = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = listing.lines().collect();
        assert_eq!(lines.len(), 3, "{listing}");
        assert!(lines[0].starts_with("-rw-r--r-- root/root") && lines[0].ends_with("Dockerfile"));
        assert!(lines[1].starts_with("-rwxr-xr-x root/root") && lines[1].contains(" 1000 "));
        let x = std::process::Command::new("tar")
            .arg("-xf")
            .arg(&path)
            .arg("-C")
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(x.success());
        assert_eq!(
            std::fs::read(dir.path().join("bin")).unwrap(),
            vec![7u8; 1000]
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("Dockerfile")).unwrap(),
            "FROM scratch\n"
        );
    }

    #[test]
    fn same_input_same_bytes_and_bad_names_refused() {
        let make = || {
            let mut t = TarWriter::new();
            t.file("a", 0o644, b"x").unwrap();
            t.finish()
        };
        assert_eq!(make(), make());
        let mut t = TarWriter::new();
        assert!(t.file("/abs", 0o644, b"").is_err());
        assert!(t.file(&"n".repeat(101), 0o644, b"").is_err());
    }
}
