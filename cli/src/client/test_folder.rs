//! A sample folder on disk for the folder-walking and zipping tests
//! (test builds only).

use std::fs;
use std::path::PathBuf;

/// A fresh folder under the system's temp folder, removed on drop.
pub(super) struct TempDir(pub(super) PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let path =
            std::env::temp_dir().join(format!("picsift-cli-{tag}-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Four files in nested folders (`a.png` of `big_len` bytes of 7s, the
/// others tiny) and, on Unix, a symbolic link that walking must skip.
pub(super) fn sample_folder(tag: &str, big_len: usize) -> TempDir {
    let dir = TempDir::new(tag);
    fs::create_dir_all(dir.0.join("b/deeper")).unwrap();
    fs::write(dir.0.join("z.jpg"), b"zzz").unwrap();
    fs::write(dir.0.join("a.png"), vec![7u8; big_len]).unwrap();
    fs::write(dir.0.join("b/deeper/c.webp"), b"").unwrap();
    fs::write(dir.0.join("b/x.jpg"), b"xx").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(dir.0.join("z.jpg"), dir.0.join("link.jpg")).unwrap();
    dir
}
