//! Deterministic test fixtures for picsift: photo-like JPEGs of any size,
//! the bad inputs of the bad-input catalogue, and zip archives holding them.
//! Everything is generated from a seed: the same call gives the same bytes.

use image::{ImageEncoder, Rgb, RgbImage};
use std::io::{Cursor, Write};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipArchive, ZipWriter};

pub mod ml;
pub mod services;

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

/// The demo archive: photos of several sizes, an exact duplicate, the same
/// photo with phone metadata (a duplicate once sanitised), and a few bad
/// entries, each refused with its own reason.
pub fn demo_zip() -> Vec<u8> {
    let sizes = [
        (640, 480),
        (800, 600),
        (1024, 768),
        (1280, 960),
        (1600, 1200),
        (2048, 1536),
        (3000, 2000),
        (4000, 3000),
    ];
    let mut z = ZipBuilder::new();
    let mut first = Vec::new();
    for (i, (w, h)) in sizes.iter().enumerate() {
        let j = jpeg(100 + i as u64, *w, *h);
        if i == 0 {
            first = j.clone();
        }
        z = z.stored(&format!("photos/img_{i:02}_{w}x{h}.jpg"), &j);
    }
    // The same picture as img_02, smaller and recompressed: a near duplicate.
    let smaller = encode_jpeg(&photo(102, 512, 384), 70);
    z.stored("photos/copy_of_img_00.jpg", &first)
        .stored("photos/img_00_from_phone.jpg", &with_metadata(&first, 6))
        .stored("photos/img_02_small.jpg", &smaller)
        .stored("notes.jpg", b"this is a text file with a .jpg name\n")
        .stored("cut_off.jpg", &truncated(&jpeg(900, 800, 600)))
        .stored("screenshot.png", &png(901, 320, 200))
        .finish()
}
