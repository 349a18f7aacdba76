//! Deterministic test fixtures for picsift: photo-like JPEGs of any size,
//! the bad inputs of the bad-input catalogue, and zip archives holding them.
//! Everything is generated from a seed: the same call gives the same bytes.

use image::{ImageEncoder, Rgb, RgbImage};
use std::io::{Cursor, Write};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipArchive, ZipWriter};

pub mod bench;
pub mod hashes;
pub mod ml;
pub mod services;

/// The environment variable `name` parsed as a `T`, or `default` when it
/// is unset or does not parse (the benches' and harnesses' settings).
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// SplitMix64: a tiny deterministic generator, enough for fixtures.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A float in [0, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// A photo-like picture: a sky-to-ground gradient, soft blobs of colour,
/// a little texture and sensor-like noise. Different seeds give images far
/// apart; the same seed gives the same pixels.
pub fn photo(seed: u64, width: u32, height: u32) -> RgbImage {
    let mut rng = Rng::new(seed);
    let top = [rng.unit() * 255.0, rng.unit() * 255.0, rng.unit() * 255.0];
    let bottom = [rng.unit() * 255.0, rng.unit() * 255.0, rng.unit() * 255.0];
    let blobs: Vec<(f32, f32, f32, [f32; 3])> = (0..6)
        .map(|_| {
            let r = 0.08 + rng.unit() * 0.25;
            (
                rng.unit(),
                rng.unit(),
                r,
                [rng.unit() * 255.0, rng.unit() * 255.0, rng.unit() * 255.0],
            )
        })
        .collect();
    let (fx, fy) = (3.0 + rng.unit() * 20.0, 3.0 + rng.unit() * 20.0);
    let mut noise = Rng::new(seed.wrapping_mul(31).wrapping_add(7));
    let (w, h) = (width as f32, height as f32);
    RgbImage::from_fn(width, height, |x, y| {
        let (u, v) = (x as f32 / w, y as f32 / h);
        let mut c = [0f32; 3];
        for (i, ch) in c.iter_mut().enumerate() {
            *ch = top[i] * (1.0 - v) + bottom[i] * v;
        }
        for &(bx, by, r, col) in &blobs {
            let d2 = ((u - bx) * (u - bx) + (v - by) * (v - by)) / (r * r);
            if d2 < 1.0 {
                let a = (1.0 - d2) * 0.8;
                for i in 0..3 {
                    c[i] = c[i] * (1.0 - a) + col[i] * a;
                }
            }
        }
        let texture = ((u * fx * std::f32::consts::TAU).sin()
            * (v * fy * std::f32::consts::TAU).cos())
            * 12.0;
        let n = (noise.next_u64() & 0x0F) as f32 - 7.5;
        Rgb(c.map(|ch| (ch + texture + n).clamp(0.0, 255.0) as u8))
    })
}

/// A baseline JPEG of [`photo`] at quality 88.
pub fn jpeg(seed: u64, width: u32, height: u32) -> Vec<u8> {
    encode_jpeg(&photo(seed, width, height), 88)
}

/// Encodes pixels as a baseline JPEG.
pub fn encode_jpeg(img: &RgbImage, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
        .encode_image(img)
        .expect("encoding to memory does not fail");
    out
}

/// A PNG of [`photo`].
pub fn png(seed: u64, width: u32, height: u32) -> Vec<u8> {
    let img = photo(seed, width, height);
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(img.as_raw(), width, height, image::ExtendedColorType::Rgb8)
        .expect("encoding to memory does not fail");
    out
}

/// Inserts an EXIF block (orientation, a GPS position, a camera make) and a
/// comment right after SOI: what a phone photo carries.
pub fn with_metadata(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    // Big-endian TIFF: IFD0 with Orientation, Make and a GPS IFD pointer; GPS IFD with latitude ref.
    let mut tiff = b"MM\0\x2a\0\0\0\x08".to_vec();
    tiff.extend_from_slice(&3u16.to_be_bytes());
    tiff.extend_from_slice(&[0x01, 0x0F, 0, 2, 0, 0, 0, 4, b'A', b'C', b'M', 0]); // Make "ACM"
    tiff.extend_from_slice(&[0x01, 0x12, 0, 3, 0, 0, 0, 1]);
    tiff.extend_from_slice(&orientation.to_be_bytes());
    tiff.extend_from_slice(&[0, 0]);
    tiff.extend_from_slice(&[0x88, 0x25, 0, 4, 0, 0, 0, 1, 0, 0, 0, 50]); // GPS IFD at 50
    tiff.extend_from_slice(&[0, 0, 0, 0]);
    tiff.resize(50, 0);
    tiff.extend_from_slice(&1u16.to_be_bytes());
    tiff.extend_from_slice(&[0x00, 0x01, 0, 2, 0, 0, 0, 2, b'N', 0, 0, 0]); // GPSLatitudeRef "N"
    tiff.extend_from_slice(&[0, 0, 0, 0]);
    tiff.extend_from_slice(b"GPS 51.5007N 0.1246W");
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend_from_slice(&tiff);
    let comment = b"shot at home, 12 Example Street";
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&[0xFF, 0xFE]);
    out.extend_from_slice(&((comment.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(comment);
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// The first 60 % of a JPEG: no end-of-image marker.
pub fn truncated(jpeg: &[u8]) -> Vec<u8> {
    jpeg[..jpeg.len() * 6 / 10].to_vec()
}

/// The first 60 % of a JPEG with an end-of-image marker glued on: the
/// structure looks complete, the entropy-coded data runs out.
pub fn truncated_with_eoi(jpeg: &[u8]) -> Vec<u8> {
    let mut out = truncated(jpeg);
    while out.last() == Some(&0xFF) {
        out.pop();
    }
    out.extend_from_slice(&[0xFF, 0xD9]);
    out
}

/// A JPEG with a zip archive appended (a polyglot file).
pub fn with_zip_appended(jpeg: &[u8]) -> Vec<u8> {
    let mut out = jpeg.to_vec();
    out.extend_from_slice(
        &ZipBuilder::new()
            .file("hidden.txt", b"payload", CompressionMethod::Stored)
            .finish(),
    );
    out
}

/// A few hundred bytes of valid JPEG whose frame header declares `width`×`height`.
pub fn declares_dimensions(width: u16, height: u16) -> Vec<u8> {
    let mut j = encode_jpeg(&RgbImage::from_pixel(8, 8, Rgb([120, 130, 140])), 50);
    let sof = j
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .expect("baseline JPEG has SOF0");
    j[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
    j[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
    j
}

/// Builds zip archives entry by entry, including the unsafe kinds.
pub struct ZipBuilder {
    zip: ZipWriter<Cursor<Vec<u8>>>,
    encrypt: Vec<String>,
    lie: Vec<String>,
}

impl Default for ZipBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ZipBuilder {
    /// An empty archive.
    pub fn new() -> Self {
        Self {
            zip: ZipWriter::new(Cursor::new(Vec::new())),
            encrypt: Vec::new(),
            lie: Vec::new(),
        }
    }

    /// Adds a file.
    pub fn file(mut self, name: &str, data: &[u8], method: CompressionMethod) -> Self {
        let opts = SimpleFileOptions::default()
            .compression_method(method)
            .large_file(data.len() > u32::MAX as usize);
        self.zip.start_file(name, opts).expect("valid entry");
        self.zip.write_all(data).expect("write to memory");
        self
    }

    /// Adds a stored file.
    pub fn stored(self, name: &str, data: &[u8]) -> Self {
        self.file(name, data, CompressionMethod::Stored)
    }

    /// Adds a directory entry.
    pub fn dir(mut self, name: &str) -> Self {
        self.zip
            .add_directory(name, SimpleFileOptions::default())
            .expect("valid entry");
        self
    }

    /// Adds a symbolic link entry.
    pub fn symlink(mut self, name: &str, target: &str) -> Self {
        self.zip
            .add_symlink(name, target, SimpleFileOptions::default())
            .expect("valid entry");
        self
    }

    /// Adds a stored file whose headers say it is encrypted.
    pub fn encrypted(mut self, name: &str, data: &[u8]) -> Self {
        self.encrypt.push(name.into());
        self.stored(name, data)
    }

    /// Adds a deflated file whose headers declare 100 bytes fewer than it inflates to.
    pub fn lying_size(mut self, name: &str, data: &[u8]) -> Self {
        self.lie.push(name.into());
        self.file(name, data, CompressionMethod::Deflated)
    }

    /// The archive's bytes.
    pub fn finish(self) -> Vec<u8> {
        let mut bytes = self.zip.finish().expect("finish in memory").into_inner();
        if self.encrypt.is_empty() && self.lie.is_empty() {
            return bytes;
        }
        let mut patches = Vec::new();
        {
            let mut archive = ZipArchive::new(Cursor::new(&bytes[..])).expect("just written");
            for i in 0..archive.len() {
                let f = archive.by_index_raw(i).expect("just written");
                let (local, central) =
                    (f.header_start() as usize, f.central_header_start() as usize);
                let name = f.name().map(|n| n.to_string()).unwrap_or_default();
                if self.encrypt.contains(&name) {
                    patches.push((local + 6, central + 8, None));
                }
                if self.lie.contains(&name) {
                    patches.push((
                        local + 22,
                        central + 24,
                        Some((f.size() as u32).saturating_sub(100)),
                    ));
                }
            }
        }
        for (local, central, size) in patches {
            match size {
                // General purpose flag bit 0: encrypted.
                None => {
                    bytes[local] |= 1;
                    bytes[central] |= 1;
                }
                Some(n) => {
                    bytes[local..local + 4].copy_from_slice(&n.to_le_bytes());
                    bytes[central..central + 4].copy_from_slice(&n.to_le_bytes());
                }
            }
        }
        bytes
    }
}

/// 40 MiB of zeros deflated to a few dozen KiB.
pub fn zip_bomb_entry() -> Vec<u8> {
    vec![0u8; 40 << 20]
}

/// The demo archive, with what each entry shows (the demo policy's verdict
/// in brackets; `the_demo_batch_tells_its_story` in tests/tests/ml.rs
/// checks every one). Real photos from tests/data (PDQ reference photos,
/// BSD licence):
/// - `photos/bridge.jpg`: a photo (accepted);
/// - `photos/bridge-copy.jpg`: the same file again (exact duplicate);
/// - `photos/bridge-saturated.jpg`: the photo with its colours boosted
///   (near duplicate of bridge.jpg, with the PDQ distance);
/// - `photos/bridge-from-iphone.heic`: the photo as an iPhone saves it,
///   HEIC (near duplicate: the same picture in another format);
/// - `photos/portrait.jpg`: a 12 MP Samsung phone photo stored sideways with
///   EXIF orientation 6 and GPS (accepted; stored upright, GPS removed);
/// - `photos/canal-houses.jpg`, `photos/people.jpg`, `photos/stairs.jpg`:
///   small unrelated photos (accepted; NudeNet scores the men's faces in
///   people.jpg, which the policy does not reject);
/// - `photos/blank.png`: an even grey picture (rejected: blank);
/// - `notes.jpg`: a text file with a .jpg name (rejected: not an image);
/// - `cut_off.jpg`: a photo cut off mid-transfer (rejected: truncated).
pub fn demo_zip() -> Vec<u8> {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
    let read = |path: &str| {
        std::fs::read(data.join(path)).unwrap_or_else(|e| panic!("tests/data/{path}: {e}"))
    };
    let bridge = read("pdq/bridge-mods/aaa-orig.jpg");
    let blank = image::RgbImage::from_pixel(640, 480, image::Rgb([128, 128, 128]));
    let mut blank_png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut blank_png)
        .write_image(blank.as_raw(), 640, 480, image::ExtendedColorType::Rgb8)
        .expect("PNG encodes");
    ZipBuilder::new()
        .stored("photos/bridge.jpg", &bridge)
        .stored("photos/bridge-copy.jpg", &bridge)
        .stored(
            "photos/bridge-saturated.jpg",
            &read("pdq/bridge-mods/high-saturation.jpg"),
        )
        .stored("photos/bridge-from-iphone.heic", &read("heif/photo.heic"))
        .stored(
            "photos/portrait.jpg",
            &read("pdq/reg-test-input/exif-rotn/exif-rotn-6.jpg"),
        )
        .stored(
            "photos/canal-houses.jpg",
            &read("pdq/reg-test-input/labelme-subset/q1050.jpg"),
        )
        .stored(
            "photos/people.jpg",
            &read("pdq/reg-test-input/labelme-subset/q0291.jpg"),
        )
        .stored(
            "photos/stairs.jpg",
            &read("pdq/reg-test-input/labelme-subset/q0746.jpg"),
        )
        .stored("photos/blank.png", &blank_png)
        .stored("notes.jpg", b"this is a text file with a .jpg name\n")
        .stored(
            "cut_off.jpg",
            &truncated(&read("pdq/bridge-mods/square-512x512.jpg")),
        )
        .finish()
}

// The bad-input catalogue (tests/bad_inputs/README.md): archives and images
// that zip tools and encoders never write, forged byte by byte.

/// CRC-32 (IEEE), as zip headers carry it.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

fn le16(b: &[u8], at: usize) -> usize {
    usize::from(u16::from_le_bytes([b[at], b[at + 1]]))
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("four bytes"))
}

/// A zip taken apart at its central directory, so that a test can forge
/// records (overlapping, duplicated, Zip64-inflated) and put it back
/// together. [`ZipParts::split`] takes archives without Zip64 records or an
/// archive comment: what [`ZipBuilder`] writes for small entries.
#[derive(Clone, Debug, Default)]
pub struct ZipParts {
    /// Everything before the central directory: local headers and data.
    pub local: Vec<u8>,
    /// The central directory's records, in order.
    pub central: Vec<Vec<u8>>,
}

impl ZipParts {
    /// Takes `zip` apart.
    pub fn split(zip: &[u8]) -> Self {
        let eocd = zip.len() - 22;
        assert_eq!(&zip[eocd..eocd + 4], b"PK\x05\x06", "no comment, no Zip64");
        let count = le16(zip, eocd + 10);
        let mut at = le32(zip, eocd + 16) as usize;
        let local = zip[..at].to_vec();
        let central = (0..count)
            .map(|_| {
                let len = 46 + le16(zip, at + 28) + le16(zip, at + 30) + le16(zip, at + 32);
                at += len;
                zip[at - len..at].to_vec()
            })
            .collect();
        Self { local, central }
    }

    /// The index of the record named `name`.
    pub fn position(&self, name: &str) -> usize {
        self.central
            .iter()
            .position(|r| record_name(r) == name.as_bytes())
            .unwrap_or_else(|| panic!("no entry {name}"))
    }

    /// The central directory's bytes.
    pub fn directory(&self) -> Vec<u8> {
        self.central.concat()
    }

    /// The archive: local part, central directory and end record (with
    /// Zip64 records when there are more than 65534 entries).
    pub fn join(&self) -> Vec<u8> {
        let n = self.central.len() as u64;
        self.join_declaring(n, n > 0xFFFE)
    }

    /// The archive with an end record declaring `entries`, in a Zip64 end
    /// record when `zip64` (the classic record then says 0xFFFF).
    pub fn join_declaring(&self, entries: u64, zip64: bool) -> Vec<u8> {
        let dir = self.directory();
        let mut out = self.local.clone();
        let (offset, size) = (out.len() as u64, dir.len() as u64);
        out.extend_from_slice(&dir);
        if zip64 {
            let at = out.len() as u64;
            out.extend_from_slice(b"PK\x06\x06");
            out.extend_from_slice(&44u64.to_le_bytes());
            out.extend_from_slice(&[45, 0, 45, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            out.extend_from_slice(&entries.to_le_bytes());
            out.extend_from_slice(&entries.to_le_bytes());
            out.extend_from_slice(&size.to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            out.extend_from_slice(b"PK\x06\x07\0\0\0\0");
            out.extend_from_slice(&at.to_le_bytes());
            out.extend_from_slice(&1u32.to_le_bytes());
        }
        let small = |v: u64, max: u64| if zip64 { max } else { v.min(max) };
        let count = small(entries, 0xFFFF) as u16;
        out.extend_from_slice(b"PK\x05\x06\0\0\0\0");
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&(small(size, 0xFFFF_FFFF) as u32).to_le_bytes());
        out.extend_from_slice(&(small(offset, 0xFFFF_FFFF) as u32).to_le_bytes());
        out.extend_from_slice(&[0, 0]);
        out
    }
}

/// The name bytes of a central directory record.
pub fn record_name(record: &[u8]) -> &[u8] {
    &record[46..46 + le16(record, 28)]
}

/// A central directory record with another name (the local header keeps
/// its own).
pub fn renamed(record: &[u8], name: &[u8]) -> Vec<u8> {
    let old = le16(record, 28);
    let mut out = record[..46].to_vec();
    out[28..30].copy_from_slice(&(name.len() as u16).to_le_bytes());
    out.extend_from_slice(name);
    out.extend_from_slice(&record[46 + old..]);
    out
}

/// `count` empty stored entries named `00000.jpg` …, written directly (a
/// zip writer takes seconds for 100 000). [`ZipParts::join`] adds Zip64
/// end records above 65534 entries; [`ZipParts::join_declaring`] can lie.
pub fn tiny_entries(count: usize) -> ZipParts {
    let mut parts = ZipParts::default();
    for i in 0..count {
        let name = format!("{i:05}.jpg");
        let offset = parts.local.len() as u32;
        let mut local = b"PK\x03\x04\x0a\0\0\0\0\0\0\0\x21\0".to_vec();
        local.extend_from_slice(&[0; 12]); // CRC and sizes of an empty file
        local.extend_from_slice(&(name.len() as u16).to_le_bytes());
        local.extend_from_slice(&[0, 0]);
        local.extend_from_slice(name.as_bytes());
        parts.local.extend_from_slice(&local);
        let mut central = b"PK\x01\x02\x14\x03\x0a\0\0\0\0\0\0\0\x21\0".to_vec();
        central.extend_from_slice(&[0; 12]);
        central.extend_from_slice(&(name.len() as u16).to_le_bytes());
        central.extend_from_slice(&[0; 8]);
        central.extend_from_slice(&(0o100644u32 << 16).to_le_bytes());
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
        parts.central.push(central);
    }
    parts
}

/// A Fifield-style overlap: `copies` more central records, named
/// `overlap_000.jpg` …, all pointing at the local header and data of
/// `entry`, which is stored once.
pub fn overlapping_entries(zip: &[u8], entry: &str, copies: usize) -> Vec<u8> {
    let mut parts = ZipParts::split(zip);
    let record = parts.central[parts.position(entry)].clone();
    for i in 0..copies {
        parts
            .central
            .push(renamed(&record, format!("overlap_{i:03}.jpg").as_bytes()));
    }
    parts.join()
}

/// A second central record named like `entry`, pointing at its data.
pub fn with_duplicate_name(zip: &[u8], entry: &str) -> Vec<u8> {
    let mut parts = ZipParts::split(zip);
    let record = parts.central[parts.position(entry)].clone();
    parts.central.push(record);
    parts.join()
}

/// The archive with its last central record cut in half, while the end
/// record still declares every entry and the directory's full size.
pub fn truncated_central_directory(zip: &[u8]) -> Vec<u8> {
    let parts = ZipParts::split(zip);
    let full = parts.join();
    let dir = parts.directory();
    let last = parts.central.last().expect("an entry").len();
    let cut = parts.local.len() + dir.len() - last / 2;
    let mut out = full[..cut].to_vec();
    out.extend_from_slice(&full[parts.local.len() + dir.len()..]);
    out
}

/// Rewrites `entry`'s central record with a Zip64 extra field: each given
/// value replaces its 32-bit field (which then reads 0xFFFFFFFF), however
/// absurd.
pub fn with_zip64_fields(
    zip: &[u8],
    entry: &str,
    size: Option<u64>,
    compressed: Option<u64>,
    offset: Option<u64>,
) -> Vec<u8> {
    let mut parts = ZipParts::split(zip);
    let i = parts.position(entry);
    let rec = &parts.central[i];
    let (name, extra) = (le16(rec, 28), le16(rec, 30));
    let mut head = rec[..46 + name + extra].to_vec();
    let comment = rec[46 + name + extra..].to_vec();
    let mut field = Vec::new();
    for (value, at) in [(size, 24), (compressed, 20), (offset, 42)] {
        if let Some(v) = value {
            head[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
            field.extend_from_slice(&v.to_le_bytes());
        }
    }
    head.extend_from_slice(&1u16.to_le_bytes());
    head.extend_from_slice(&(field.len() as u16).to_le_bytes());
    head.extend_from_slice(&field);
    let extra = (extra + 4 + field.len()) as u16;
    head[30..32].copy_from_slice(&extra.to_le_bytes());
    head[6] = 45; // version needed: 4.5, Zip64
    head.extend_from_slice(&comment);
    parts.central[i] = head;
    parts.join()
}

/// Sets `entry`'s compression method in its local and central headers,
/// leaving the data as it is.
pub fn with_method(zip: &[u8], entry: &str, method: u16) -> Vec<u8> {
    let mut parts = ZipParts::split(zip);
    let i = parts.position(entry);
    parts.central[i][10..12].copy_from_slice(&method.to_le_bytes());
    let local = le32(&parts.central[i], 42) as usize;
    parts.local[local + 8..local + 10].copy_from_slice(&method.to_le_bytes());
    parts.join()
}

/// Sets `entry`'s declared uncompressed size (local and central headers).
pub fn with_declared_size(zip: &[u8], entry: &str, size: u32) -> Vec<u8> {
    let mut parts = ZipParts::split(zip);
    let i = parts.position(entry);
    parts.central[i][24..28].copy_from_slice(&size.to_le_bytes());
    let local = le32(&parts.central[i], 42) as usize;
    parts.local[local + 22..local + 26].copy_from_slice(&size.to_le_bytes());
    parts.join()
}

/// Flips the bits of `entry`'s CRC (local and central headers).
pub fn with_wrong_crc(zip: &[u8], entry: &str) -> Vec<u8> {
    let mut parts = ZipParts::split(zip);
    let i = parts.position(entry);
    let crc = !le32(&parts.central[i], 16);
    parts.central[i][16..20].copy_from_slice(&crc.to_le_bytes());
    let local = le32(&parts.central[i], 42) as usize;
    parts.local[local + 14..local + 18].copy_from_slice(&crc.to_le_bytes());
    parts.join()
}

/// Inserts one marker segment right after SOI.
pub fn with_segment(jpeg: &[u8], marker: u8, body: &[u8]) -> Vec<u8> {
    let len = u16::try_from(body.len() + 2).expect("a segment holds at most 65533 bytes");
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, marker]);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// `primary` with an MPF index (APP2, right after SOI) of itself and
/// `second`, and `second` appended: an MPO or a photo with a gain map.
pub fn with_mpf(primary: &[u8], second: &[u8]) -> Vec<u8> {
    let entries_len = 32u32;
    let app2_len = 2 + 4 + 8 + 2 + 12 + 4 + entries_len as usize;
    let total = primary.len() + 2 + app2_len;
    // Offsets count from the MP header: SOI, APP2 marker and length, "MPF\0".
    let header_at = 2 + 4 + 4;
    let mut tiff = b"MM\0*".to_vec();
    tiff.extend_from_slice(&8u32.to_be_bytes());
    tiff.extend_from_slice(&1u16.to_be_bytes());
    tiff.extend_from_slice(&0xB002u16.to_be_bytes());
    tiff.extend_from_slice(&7u16.to_be_bytes());
    tiff.extend_from_slice(&entries_len.to_be_bytes());
    tiff.extend_from_slice(&26u32.to_be_bytes());
    tiff.extend_from_slice(&0u32.to_be_bytes());
    for (size, offset) in [
        (total as u32, 0u32),
        (second.len() as u32, (total - header_at) as u32),
    ] {
        tiff.extend_from_slice(&0u32.to_be_bytes());
        tiff.extend_from_slice(&size.to_be_bytes());
        tiff.extend_from_slice(&offset.to_be_bytes());
        tiff.extend_from_slice(&[0; 4]);
    }
    let body = [b"MPF\0".as_slice(), &tiff].concat();
    assert_eq!(body.len() + 2, app2_len);
    let mut out = primary[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE2]);
    out.extend_from_slice(&(app2_len as u16).to_be_bytes());
    out.extend_from_slice(&body);
    out.extend_from_slice(&primary[2..]);
    assert_eq!(out.len(), total);
    out.extend_from_slice(second);
    out
}

/// Inserts `profile` after SOI as an ICC profile: APP2 segments
/// `ICC_PROFILE\0`, sequence number, count, then up to 65519 bytes each.
pub fn with_icc_profile(jpeg: &[u8], profile: &[u8]) -> Vec<u8> {
    let chunks: Vec<&[u8]> = profile.chunks(65_519).collect();
    let count = u8::try_from(chunks.len()).expect("at most 255 ICC segments");
    let mut segments = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let mut body = b"ICC_PROFILE\0".to_vec();
        body.extend_from_slice(&[i as u8 + 1, count]);
        body.extend_from_slice(chunk);
        segments.extend_from_slice(&[0xFF, 0xE2]);
        segments.extend_from_slice(&((body.len() + 2) as u16).to_be_bytes());
        segments.extend_from_slice(&body);
    }
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&segments);
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// The frame a [`crafted_jpeg`] is coded with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    /// SOF0: 8-bit Huffman baseline, what every decoder reads.
    Baseline,
    /// SOF1 with 12-bit samples.
    Extended12,
    /// SOF2: one DC scan, then this many AC scans, each one end-of-band run
    /// over every block (greyscale only). Decoders walk every block on
    /// every scan: many scans over a large frame cost CPU from a few bytes.
    Progressive(usize),
    /// SOF3 lossless, predictor 1 (greyscale only).
    Lossless,
}

/// Writes bits MSB first, stuffing a zero after each 0xFF.
struct BitWriter {
    out: Vec<u8>,
    acc: u8,
    n: u32,
}

impl BitWriter {
    fn new() -> Self {
        Self {
            out: Vec::new(),
            acc: 0,
            n: 0,
        }
    }

    fn put(&mut self, value: u32, len: u32) {
        for i in (0..len).rev() {
            self.acc = (self.acc << 1) | ((value >> i) & 1) as u8;
            self.n += 1;
            if self.n == 8 {
                self.out.push(self.acc);
                if self.acc == 0xFF {
                    self.out.push(0);
                }
                (self.acc, self.n) = (0, 0);
            }
        }
    }

    /// Pads the last byte with ones.
    fn finish(mut self) -> Vec<u8> {
        while self.n != 0 {
            self.put(1, 1);
        }
        self.out
    }
}

/// A canonical Huffman table: `(code, length)` per symbol.
fn huffman(bits: &[u8; 16], symbols: &[u8]) -> std::collections::HashMap<u8, (u32, u32)> {
    let mut table = std::collections::HashMap::new();
    let (mut code, mut k) = (0u32, 0);
    for (len, &n) in bits.iter().enumerate() {
        for _ in 0..n {
            table.insert(symbols[k], (code, len as u32 + 1));
            code += 1;
            k += 1;
        }
        code <<= 1;
    }
    table
}

/// Magnitude category and extra bits of a DC (or lossless) difference.
fn magnitude(diff: i32) -> (u32, u32) {
    let cat = 32 - diff.unsigned_abs().leading_zeros();
    let extra = if diff >= 0 {
        diff as u32
    } else {
        (diff + (1 << cat) - 1) as u32
    };
    (cat, extra)
}

fn segment(out: &mut Vec<u8>, marker: u8, body: &[u8]) {
    out.extend_from_slice(&[0xFF, marker]);
    out.extend_from_slice(&((body.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(body);
}

/// A JPEG assembled marker by marker, for the frame types no encoder at
/// hand writes: every 8×8 block is one flat shade drawn from `seed` (a
/// blocky picture with plenty of contrast). `width` and `height` are
/// multiples of 8. With `cmyk`, four components and an Adobe APP14 segment
/// saying no colour transform: a CMYK image (baseline only).
pub fn crafted_jpeg(frame: Frame, width: u16, height: u16, cmyk: bool, seed: u64) -> Vec<u8> {
    assert!(width.is_multiple_of(8) && height.is_multiple_of(8) && width > 0 && height > 0);
    assert!(
        !cmyk || frame == Frame::Baseline,
        "CMYK is crafted baseline only"
    );
    let components: u8 = if cmyk { 4 } else { 1 };
    let blocks = usize::from(width / 8) * usize::from(height / 8);
    let mut rng = Rng::new(seed);
    // One DC coefficient per block and component; with every quantiser 8,
    // a coefficient is the block's offset from mid-grey in sample levels.
    let shades: Vec<Vec<i32>> = (0..blocks)
        .map(|_| {
            (0..components)
                .map(|_| (rng.next_u64() % 161) as i32 - 80)
                .collect()
        })
        .collect();
    // The luminance DC table of ITU T.81 Annex K (categories 0 to 11).
    let dc_bits = [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0];
    let dc_symbols: Vec<u8> = (0..12).collect();
    let dc = huffman(&dc_bits, &dc_symbols);
    // AC: an end of block only; progressive: end-of-band runs 2^0 … 2^14.
    let (ac_bits, ac_symbols): ([u8; 16], Vec<u8>) = match frame {
        Frame::Progressive(_) => {
            let mut bits = [0; 16];
            bits[3] = 15;
            (bits, (0..15).map(|r| r << 4).collect())
        }
        _ => {
            let mut bits = [0; 16];
            bits[0] = 1;
            (bits, vec![0])
        }
    };
    let ac = huffman(&ac_bits, &ac_symbols);
    let mut out = vec![0xFF, 0xD8];
    if cmyk {
        segment(&mut out, 0xEE, b"Adobe\0\x64\0\0\0\0\0");
    }
    if frame != Frame::Lossless {
        let mut dqt = vec![0];
        dqt.extend_from_slice(&[8; 64]);
        segment(&mut out, 0xDB, &dqt);
    }
    let (sof, precision) = match frame {
        Frame::Baseline => (0xC0, 8),
        Frame::Extended12 => (0xC1, 12),
        Frame::Progressive(_) => (0xC2, 8),
        Frame::Lossless => (0xC3, 8),
    };
    let mut body = vec![precision];
    body.extend_from_slice(&height.to_be_bytes());
    body.extend_from_slice(&width.to_be_bytes());
    body.push(components);
    for c in 1..=components {
        body.extend_from_slice(&[c, 0x11, 0]);
    }
    segment(&mut out, sof, &body);
    let mut dht = vec![0x00];
    dht.extend_from_slice(&dc_bits);
    dht.extend_from_slice(&dc_symbols);
    if frame != Frame::Lossless {
        dht.push(0x10);
        dht.extend_from_slice(&ac_bits);
        dht.extend_from_slice(&ac_symbols);
    }
    segment(&mut out, 0xC4, &dht);
    let sos = |out: &mut Vec<u8>, ss: u8, se: u8| {
        let mut body = vec![components];
        for c in 1..=components {
            body.extend_from_slice(&[c, 0x00]);
        }
        body.extend_from_slice(&[ss, se, 0]);
        segment(out, 0xDA, &body);
    };
    let put_diff = |w: &mut BitWriter, diff: i32| {
        let (cat, extra) = magnitude(diff);
        let (code, len) = dc[&(cat as u8)];
        w.put(code, len);
        w.put(extra, cat);
    };
    // DC coefficients per block, interleaved by component as an MCU holds them.
    let dc_scan = |with_eob: bool| {
        let mut w = BitWriter::new();
        let mut prev = vec![0; usize::from(components)];
        for block in &shades {
            for (c, &shade) in block.iter().enumerate() {
                put_diff(&mut w, shade - prev[c]);
                prev[c] = shade;
                if with_eob {
                    let (code, len) = ac[&0];
                    w.put(code, len);
                }
            }
        }
        w.finish()
    };
    match frame {
        Frame::Baseline | Frame::Extended12 => {
            sos(&mut out, 0, 63);
            out.extend_from_slice(&dc_scan(true));
        }
        Frame::Progressive(scans) => {
            sos(&mut out, 0, 0);
            out.extend_from_slice(&dc_scan(false));
            for _ in 0..scans {
                sos(&mut out, 1, 63);
                let mut w = BitWriter::new();
                let mut left = blocks;
                while left > 0 {
                    let run = left.min(0x7FFF);
                    let r = usize::BITS - 1 - run.leading_zeros();
                    let (code, len) = ac[&((r as u8) << 4)];
                    w.put(code, len);
                    w.put((run - (1 << r)) as u32, r);
                    left -= run;
                }
                out.extend_from_slice(&w.finish());
            }
        }
        Frame::Lossless => {
            // Predictor 1 (the sample to the left; above at a row's start;
            // 128 first), point transform 0.
            sos(&mut out, 1, 0);
            let (w8, w) = (usize::from(width / 8), usize::from(width));
            let sample = |x: usize, y: usize| 128 + shades[(y / 8) * w8 + x / 8][0];
            let mut bits = BitWriter::new();
            for y in 0..usize::from(height) {
                for x in 0..w {
                    let predicted = match (x, y) {
                        (0, 0) => 128,
                        (0, _) => sample(0, y - 1),
                        _ => sample(x - 1, y),
                    };
                    put_diff(&mut bits, sample(x, y) - predicted);
                }
            }
            out.extend_from_slice(&bits.finish());
        }
    }
    out.extend_from_slice(&[0xFF, 0xD9]);
    out
}
