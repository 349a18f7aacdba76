//! Walking a folder to upload: its regular files, in a fixed order, with
//! the names they get in the zip; and the SHA-256 of a file on disk, which
//! both the pre-upload lookup and the download check use.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// A regular file found in the uploaded folder.
pub(super) struct FolderFile {
    /// Where it is on disk.
    pub(super) path: PathBuf,
    /// Its name in the zip: relative to the folder, `/`-separated.
    pub(super) name: String,
    /// Its size when the folder was walked.
    pub(super) len: u64,
}

/// The regular files under a folder, sorted by zip name so the same folder
/// always gives the same archive.
pub(super) struct FolderListing {
    pub(super) files: Vec<FolderFile>,
    /// Symbolic links and special files, which are left out.
    pub(super) skipped: usize,
}

pub(super) fn list_folder(root: &Path) -> io::Result<FolderListing> {
    let mut listing = FolderListing {
        files: Vec::new(),
        skipped: 0,
    };
    // An explicit stack: deep trees cannot overflow the thread's stack.
    let mut folders = vec![(root.to_path_buf(), String::new())];
    while let Some((folder, prefix)) = folders.pop() {
        let entries = fs::read_dir(&folder).map_err(|e| with_path("cannot list", &folder, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| with_path("cannot list", &folder, e))?;
            let path = entry.path();
            let Some(file_name) = entry.file_name().to_str().map(str::to_owned) else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{} has a name that is not valid UTF-8, which a zip cannot carry portably; rename it",
                        path.display()
                    ),
                ));
            };
            let name = format!("{prefix}{file_name}");
            // `file_type` does not follow symbolic links, so a link cannot
            // pull in files outside the folder or loop forever.
            let file_type = entry
                .file_type()
                .map_err(|e| with_path("cannot inspect", &path, e))?;
            if file_type.is_dir() {
                folders.push((path, format!("{name}/")));
            } else if file_type.is_file() {
                let len = entry
                    .metadata()
                    .map_err(|e| with_path("cannot inspect", &path, e))?
                    .len();
                listing.files.push(FolderFile { path, name, len });
            } else {
                listing.skipped += 1;
            }
        }
    }
    listing.files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(listing)
}

/// Lower-case hex SHA-256 of a file.
pub(super) fn file_sha256(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hex::encode(hasher.finalize()));
        }
        hasher.update(&buf[..n]);
    }
}

/// An I/O error that names the file it is about.
pub(super) fn with_path(what: &str, path: &Path, err: io::Error) -> io::Error {
    io::Error::new(err.kind(), format!("{what} {}: {err}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::super::test_folder::sample_folder;
    use super::*;

    #[test]
    fn folder_listing_is_sorted_relative_and_skips_links() {
        let dir = sample_folder("listing", 10);
        let listing = list_folder(&dir.0).unwrap();
        let names: Vec<_> = listing.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["a.png", "b/deeper/c.webp", "b/x.jpg", "z.jpg"]);
        assert_eq!(listing.skipped, usize::from(cfg!(unix)));
    }

    #[test]
    fn file_hash_is_the_sha256_of_its_bytes() {
        let dir = sample_folder("hash", 10);
        // SHA-256 of "zzz".
        assert_eq!(
            file_sha256(&dir.0.join("z.jpg")).unwrap(),
            "17f165d5a5ba695f27c023a83aa2b3463e23810e360b7517127e90161eebabda"
        );
    }
}
