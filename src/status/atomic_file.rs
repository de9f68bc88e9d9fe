//! A file replaced whole: written to a temporary file beside it, then renamed over it,
//! so a reader sees the old content or the new, never half of one. Blocking I/O: the
//! callers run it on a blocking thread.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub struct AtomicFile {
    file: File,
    /// Removed on drop unless committed.
    tmp: Option<PathBuf>,
    path: PathBuf,
}

impl AtomicFile {
    /// Starts the new content of `path` (creating its directory if needed).
    pub fn create(path: &Path) -> io::Result<AtomicFile> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        std::fs::create_dir_all(dir)?;
        let name = path
            .file_name()
            .ok_or_else(|| io::Error::other("not a file name"))?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(".tmp");
        let tmp = dir.join(tmp_name);
        let file = File::create(&tmp)?;
        Ok(AtomicFile {
            file,
            tmp: Some(tmp),
            path: path.to_path_buf(),
        })
    }

    pub fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)
    }

    /// Puts the new content in place.
    pub fn commit(mut self) -> io::Result<()> {
        let Some(tmp) = self.tmp.take() else {
            return Ok(());
        };
        let renamed = std::fs::rename(&tmp, &self.path);
        if renamed.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        renamed
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// Replaces `path` with `bytes`.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = AtomicFile::create(path)?;
    file.write_all(bytes)?;
    file.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("btcagent-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn atomic_write_creates_the_directory_and_replaces_the_file() {
        let dir = scratch("atomic-unit");
        let path = dir.join("sub/status.json");
        write_atomically(&path, b"one").unwrap();
        write_atomically(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.join("sub")).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file is left behind");
        // A path whose directory cannot exist fails with an error, not a panic.
        std::fs::write(dir.join("file"), b"x").unwrap();
        assert!(write_atomically(&dir.join("file/status.json"), b"x").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn content_written_in_pieces_appears_only_on_commit() {
        let dir = scratch("atomic-pieces");
        let path = dir.join("status.json");
        write_atomically(&path, b"old").unwrap();
        let mut file = AtomicFile::create(&path).unwrap();
        file.write_all(b"n").unwrap();
        file.write_all(b"ew").unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"old",
            "not before the commit"
        );
        file.commit().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        // Abandoned half-way (a failed write): the old content stays, no litter.
        let mut file = AtomicFile::create(&path).unwrap();
        file.write_all(b"half").unwrap();
        drop(file);
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
