//! Archive and entry safety. Entry names are only ever reported, never used
//! as paths; the checks here decide per entry, from the central directory,
//! before any byte is inflated, and bound what inflating may produce.

use crate::format::{self, Sniffed};
use crate::policy::Policy;
use crate::setting::Setting;
use crate::verdict::{Reason, Rejection};
use std::io::{Read, Seek};
use zip::{CompressionMethod, ZipArchive};

/// What the central directory says about one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryMeta {
    /// The name as stored (lossy UTF-8), for reports only.
    pub name: String,
    /// A directory entry.
    pub is_dir: bool,
    /// A symbolic link entry.
    pub is_symlink: bool,
    /// Encrypted (traditional or AES).
    pub encrypted: bool,
    /// Stored or deflate; anything else is refused.
    pub supported_method: bool,
    /// The compression method's name, for messages.
    pub method: String,
    /// Compressed bytes.
    pub compressed_size: u64,
    /// Declared uncompressed bytes.
    pub size: u64,
}

impl EntryMeta {
    /// Reads entry `index` of the central directory.
    pub fn read<R: Read + Seek>(
        archive: &mut ZipArchive<R>,
        index: usize,
    ) -> zip::result::ZipResult<Self> {
        let f = archive.by_index_raw(index)?;
        let method = f.compression();
        Ok(Self {
            name: String::from_utf8_lossy(f.name_raw()).into_owned(),
            is_dir: f.is_dir(),
            is_symlink: f.is_symlink(),
            encrypted: f.encrypted(),
            supported_method: matches!(
                method,
                CompressionMethod::Stored | CompressionMethod::Deflated
            ),
            method: format!("{method:?}"),
            compressed_size: f.compressed_size(),
            size: f.size(),
        })
    }
}

/// Refuses names that could climb out of a folder if anyone ever used them as paths.
pub fn check_name(name: &str) -> Result<(), Rejection> {
    let bad = |why: &str| {
        Err(Rejection::new(
            Reason::UnsafeName,
            format!("entry name {name:?} {why}"),
        ))
    };
    if name.is_empty() {
        return bad("is empty");
    }
    if name.len() > 1024 {
        return bad("is longer than 1024 bytes");
    }
    if name.chars().any(char::is_control) {
        return bad("holds control characters");
    }
    let unified = name.replace('\\', "/");
    if unified.starts_with('/') || unified.as_bytes().get(1) == Some(&b':') {
        return bad("is an absolute path");
    }
    if unified.split('/').any(|part| part == "..") {
        return bad("climbs out of the archive with '..'");
    }
    Ok(())
}

/// Entry checks that need no inflating, in a fixed order.
pub fn check_entry(meta: &EntryMeta, policy: &Policy) -> Result<(), Rejection> {
    check_name(&meta.name)?;
    if meta.is_dir {
        return Err(Rejection::new(
            Reason::DirectoryEntry,
            "the entry is a directory",
        ));
    }
    if meta.is_symlink {
        return Err(Rejection::new(
            Reason::Symlink,
            "the entry is a symbolic link",
        ));
    }
    if meta.encrypted {
        return Err(Rejection::new(Reason::Encrypted, "the entry is encrypted"));
    }
    if !meta.supported_method {
        return Err(Rejection::new(
            Reason::UnsupportedCompression,
            format!(
                "compression method {} is not stored or deflate",
                meta.method
            ),
        ));
    }
    if meta.size > policy.max_entry_bytes {
        return Err(Rejection::new(
            Reason::EntryTooLarge,
            format!(
                "entry declares {} bytes; the policy allows {} ({})",
                meta.size,
                policy.max_entry_bytes,
                policy.spelling.name(Setting::MaxEntryBytes)
            ),
        ));
    }
    if meta.size
        > meta
            .compressed_size
            .max(1)
            .saturating_mul(policy.max_compression_ratio)
    {
        return Err(Rejection::new(
            Reason::CompressionRatio,
            format!(
                "entry inflates {} bytes to {} (ratio {}); the policy allows {} ({})",
                meta.compressed_size,
                meta.size,
                meta.size / meta.compressed_size.max(1),
                policy.max_compression_ratio,
                policy.spelling.name(Setting::MaxCompressionRatio)
            ),
        ));
    }
    Ok(())
}

/// Inflates entry `index`, never producing more than its declared size
/// (and the policy's limit) plus one byte, and refuses sizes that lie.
pub fn read_entry<R: Read + Seek>(
    archive: &mut ZipArchive<R>,
    index: usize,
    meta: &EntryMeta,
    policy: &Policy,
) -> Result<Vec<u8>, Rejection> {
    let limit = meta.size.min(policy.max_entry_bytes);
    let file = archive
        .by_index(index)
        .map_err(|e| Rejection::new(Reason::DecodeError, format!("cannot open the entry: {e}")))?;
    let mut out = Vec::with_capacity(limit as usize);
    let read = file.take(limit + 1).read_to_end(&mut out);
    if out.len() as u64 > limit {
        return Err(Rejection::new(
            Reason::SizeMismatch,
            format!(
                "entry inflates to more than the {} bytes it declares",
                meta.size
            ),
        ));
    }
    match read {
        Ok(_) if out.len() as u64 == meta.size => Ok(out),
        Ok(_) => Err(Rejection::new(
            Reason::SizeMismatch,
            format!(
                "entry inflates to {} bytes but declares {}",
                out.len(),
                meta.size
            ),
        )),
        Err(e) => {
            let text = e.to_string();
            if text.contains("checksum") || text.contains("declared") {
                Err(Rejection::new(
                    Reason::SizeMismatch,
                    format!("entry data does not match its declared size or checksum: {text}"),
                ))
            } else {
                Err(Rejection::new(
                    Reason::DecodeError,
                    format!("cannot inflate the entry: {text}"),
                ))
            }
        }
    }
}

/// Reads up to [`format::SNIFF_LEN`] leading bytes of an entry, inflating no more.
pub fn sniff_entry<R: Read + Seek>(archive: &mut ZipArchive<R>, index: usize) -> Option<Sniffed> {
    let file = archive.by_index(index).ok()?;
    let mut head = Vec::with_capacity(format::SNIFF_LEN);
    file.take(format::SNIFF_LEN as u64)
        .read_to_end(&mut head)
        .ok()?;
    Some(format::sniff(&head))
}

/// What the gateway's light check learnt about a whole archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Number of entries.
    pub entries: u64,
    /// Sum of the entries' declared uncompressed sizes.
    pub declared_bytes: u64,
    /// Entries whose leading bytes are an allowed image format.
    pub images: u64,
    /// Names of entries whose leading bytes are not an allowed image (at most 20).
    pub refused: Vec<String>,
}

/// Why an archive as a whole is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ArchiveProblem {
    /// Not a zip, or an unreadable one.
    #[error("{0}")]
    NotZip(String),
    /// Two entries share a name (only the last would be reachable).
    #[error("the archive holds two or more entries with the same name; entry names must be unique")]
    DuplicateNames,
    /// Entries share bytes (a Fifield-style "overlapping" zip bomb, or a
    /// header inside another entry's data).
    #[error(
        "entries of the archive overlap: two or more entries share the same bytes (an overlapping-entry zip bomb)"
    )]
    Overlapping,
    /// Data before the first entry (a polyglot file).
    #[error("the archive starts at byte {0}, not 0: something is prepended to it")]
    Prepended(u64),
    /// No entries.
    #[error("the archive has no entries")]
    Empty,
    /// Over the entry count limit.
    #[error("the archive has {0} entries; the policy allows {1} ({2})")]
    TooManyEntries(u64, u64, String),
    /// Over the declared size limit.
    #[error("the entries declare {0} bytes in all; the policy allows {1} ({2})")]
    TooLarge(u64, u64, String),
    /// No entry is an allowed image.
    #[error("no entry is an allowed image ({0})")]
    NoImages(String),
    /// Some entries are not allowed images, and the upload asked to be strict.
    #[error("{0} entries are not allowed images: {1}")]
    SomeNotImages(u64, String),
}

/// The entry count the end-of-central-directory record declares (Zip64
/// aware), read from the archive's tail without parsing the directory:
/// the zip reader holds the whole directory in memory, so a huge count must
/// be refused before it runs. `None` when no record is found.
pub fn declared_entries<R: Read + Seek>(reader: &mut R) -> Option<u64> {
    end_record(reader).map(|e| e.entries)
}

/// What the end-of-central-directory record (Zip64 aware) declares.
struct EndRecord {
    entries: u64,
    dir_start: u64,
}

fn end_record<R: Read + Seek>(reader: &mut R) -> Option<EndRecord> {
    use std::io::SeekFrom;
    let len = reader.seek(SeekFrom::End(0)).ok()?;
    let tail_len = len.min(22 + 65_535);
    reader.seek(SeekFrom::Start(len - tail_len)).ok()?;
    let mut tail = vec![0u8; tail_len as usize];
    reader.read_exact(&mut tail).ok()?;
    let eocd = tail.windows(4).rposition(|w| w == b"PK\x05\x06")?;
    let u16_at = |at: usize| Some(u16::from_le_bytes(tail.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(tail.get(at..at + 4)?.try_into().ok()?));
    let (entries, dir_start) = (u16_at(eocd + 10)?, u32_at(eocd + 16)?);
    if entries != 0xFFFF && dir_start != 0xFFFF_FFFF {
        return Some(EndRecord {
            entries: u64::from(entries),
            dir_start: u64::from(dir_start),
        });
    }
    let loc = eocd.checked_sub(20)?;
    if tail.get(loc..loc + 4)? != b"PK\x06\x07" {
        return None;
    }
    let at = u64::from_le_bytes(tail.get(loc + 8..loc + 16)?.try_into().ok()?);
    reader.seek(SeekFrom::Start(at)).ok()?;
    let mut rec = [0u8; 56];
    reader.read_exact(&mut rec).ok()?;
    (rec[..4] == *b"PK\x06\x06").then(|| EndRecord {
        entries: u64::from_le_bytes(rec[32..40].try_into().unwrap_or_default()),
        dir_start: u64::from_le_bytes(rec[48..56].try_into().unwrap_or_default()),
    })
}

/// Walks the central directory's file headers from `start`, counting them
/// (at most `cap`), until something else follows.
fn count_central_headers<R: Read + Seek>(
    reader: &mut R,
    start: u64,
    cap: u64,
) -> std::io::Result<u64> {
    reader.seek(std::io::SeekFrom::Start(start))?;
    let mut r = std::io::BufReader::with_capacity(64 << 10, reader);
    let mut n = 0u64;
    let mut header = [0u8; 46];
    while n < cap {
        if r.read_exact(&mut header).is_err() || header[..4] != *b"PK\x01\x02" {
            break;
        }
        n += 1;
        let skip = [28, 30, 32]
            .iter()
            .map(|&at| i64::from(u16::from_le_bytes([header[at], header[at + 1]])))
            .sum::<i64>();
        r.seek_relative(skip)?;
    }
    Ok(n)
}

/// The gateway's light check of a staged archive: it is a zip starting at
/// offset 0, within the entry and size limits, and its entries start like
/// images. `head` is the upload's first bytes.
pub fn light_check<R: Read + Seek>(
    head: &[u8],
    mut reader: R,
    policy: &Policy,
) -> Result<Summary, ArchiveProblem> {
    if !(head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06")) {
        return Err(ArchiveProblem::NotZip(
            "the upload is not a zip archive (its first bytes are not a zip header)".into(),
        ));
    }
    if let Some(n) = declared_entries(&mut reader).filter(|&n| n > policy.max_entries) {
        return Err(ArchiveProblem::TooManyEntries(
            n,
            policy.max_entries,
            policy.spelling.name(Setting::MaxEntries),
        ));
    }
    // The end record's count is 16 bits (or a Zip64 field) and may wrap or
    // lie: count the central directory's headers themselves.
    if let Some(end) = end_record(&mut reader) {
        let walked =
            count_central_headers(&mut reader, end.dir_start, policy.max_entries + 1).unwrap_or(0);
        if walked > policy.max_entries {
            return Err(ArchiveProblem::TooManyEntries(
                walked,
                policy.max_entries,
                policy.spelling.name(Setting::MaxEntries),
            ));
        }
        if walked > end.entries {
            return Err(ArchiveProblem::NotZip(format!(
                "the end record declares {} entries, but the central directory holds {walked}",
                end.entries
            )));
        }
    }
    let mut archive = ZipArchive::new(reader)
        .map_err(|e| ArchiveProblem::NotZip(format!("the zip archive cannot be read: {e}")))?;
    match archive.has_overlapping_entries() {
        Ok(false) => {}
        Ok(true) => return Err(ArchiveProblem::Overlapping),
        Err(e) => {
            return Err(ArchiveProblem::NotZip(format!(
                "the archive's entries cannot be located: {e}"
            )));
        }
    }
    // The zip reader keeps one entry per name: a repeated name would leave
    // an entry without a verdict.
    if archive.has_duplicate_names() {
        return Err(ArchiveProblem::DuplicateNames);
    }
    if archive.offset() != 0 {
        return Err(ArchiveProblem::Prepended(archive.offset()));
    }
    let entries = archive.len() as u64;
    if entries == 0 {
        return Err(ArchiveProblem::Empty);
    }
    if entries > policy.max_entries {
        return Err(ArchiveProblem::TooManyEntries(
            entries,
            policy.max_entries,
            policy.spelling.name(Setting::MaxEntries),
        ));
    }
    let mut summary = Summary {
        entries,
        declared_bytes: 0,
        images: 0,
        refused: Vec::new(),
    };
    let mut refused = 0u64;
    for i in 0..archive.len() {
        let meta = EntryMeta::read(&mut archive, i)
            .map_err(|e| ArchiveProblem::NotZip(format!("entry {i} cannot be read: {e}")))?;
        summary.declared_bytes = summary.declared_bytes.saturating_add(meta.size);
        let ok = check_entry(&meta, policy).is_ok()
            && matches!(sniff_entry(&mut archive, i), Some(Sniffed::Image(f)) if policy.allows(f));
        if ok {
            summary.images += 1;
        } else {
            refused += 1;
            if summary.refused.len() < 20 {
                summary.refused.push(meta.name);
            }
        }
    }
    if summary.declared_bytes > policy.max_total_uncompressed_bytes {
        return Err(ArchiveProblem::TooLarge(
            summary.declared_bytes,
            policy.max_total_uncompressed_bytes,
            policy.spelling.name(Setting::MaxTotalUncompressedBytes),
        ));
    }
    if summary.images == 0 {
        return Err(ArchiveProblem::NoImages(format!(
            "{refused} entries, none starts like an allowed image"
        )));
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(name: &str) -> EntryMeta {
        EntryMeta {
            name: name.into(),
            is_dir: false,
            is_symlink: false,
            encrypted: false,
            supported_method: true,
            method: "Deflated".into(),
            compressed_size: 1000,
            size: 1200,
        }
    }

    #[test]
    fn entry_checks_give_their_own_reasons() {
        let p = Policy::default();
        let cases: Vec<(EntryMeta, Option<Reason>)> = vec![
            (meta("a/b.jpg"), None),
            (meta("../../etc/passwd.jpg"), Some(Reason::UnsafeName)),
            (meta("/abs.jpg"), Some(Reason::UnsafeName)),
            (meta("C:\\x.jpg"), Some(Reason::UnsafeName)),
            (meta("a\\..\\..\\x.jpg"), Some(Reason::UnsafeName)),
            (meta("bell\u{7}.jpg"), Some(Reason::UnsafeName)),
            (
                EntryMeta {
                    is_dir: true,
                    ..meta("d/")
                },
                Some(Reason::DirectoryEntry),
            ),
            (
                EntryMeta {
                    is_symlink: true,
                    ..meta("l.jpg")
                },
                Some(Reason::Symlink),
            ),
            (
                EntryMeta {
                    encrypted: true,
                    ..meta("e.jpg")
                },
                Some(Reason::Encrypted),
            ),
            (
                EntryMeta {
                    supported_method: false,
                    ..meta("b.jpg")
                },
                Some(Reason::UnsupportedCompression),
            ),
            (
                EntryMeta {
                    size: 1 << 40,
                    compressed_size: 1 << 39,
                    ..meta("big.jpg")
                },
                Some(Reason::EntryTooLarge),
            ),
            (
                EntryMeta {
                    size: 10_000_000,
                    compressed_size: 10_000,
                    ..meta("bomb.jpg")
                },
                Some(Reason::CompressionRatio),
            ),
            (
                EntryMeta {
                    size: 0,
                    compressed_size: 0,
                    ..meta("empty.jpg")
                },
                None,
            ),
        ];
        for (m, want) in cases {
            assert_eq!(check_entry(&m, &p).err().map(|r| r.reason), want, "{m:?}");
        }
    }

    #[test]
    fn entry_count_is_read_from_the_tail_before_the_directory() {
        use std::io::{Cursor, Write};
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for i in 0..3 {
            w.start_file(format!("{i}.jpg"), zip::write::SimpleFileOptions::default())
                .unwrap();
            w.write_all(b"x").unwrap();
        }
        let bytes = w.finish().unwrap().into_inner();
        assert_eq!(declared_entries(&mut Cursor::new(&bytes)), Some(3));
        let tight = Policy {
            max_entries: 2,
            ..Policy::default()
        };
        let r = light_check(&bytes[..4], Cursor::new(&bytes), &tight);
        assert_eq!(
            r,
            Err(ArchiveProblem::TooManyEntries(
                3,
                2,
                "ValidationPolicy.limits.maxEntries".into()
            ))
        );
        assert_eq!(
            declared_entries(&mut Cursor::new(b"not a zip at all".to_vec())),
            None
        );
    }
}
