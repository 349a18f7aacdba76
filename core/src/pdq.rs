//! PDQ, Meta's 256-bit perceptual hash with its 0–100 quality score.
//!
//! Our own implementation of the ThreatExchange reference (`pdq/cpp`:
//! `hashing/pdqhashing.cpp`, `downscaling/downscaling.cpp`, `io/pdqio.cpp`;
//! the algorithm is described in `pdq/README.md` and `hashing.pdf`). The
//! steps and their floating-point arithmetic follow the reference so that
//! our hashes land a few bits from its hashes (the remainder comes from the
//! JPEG decoders, not from here):
//!
//! 1. an image larger than 512 pixels on either side is first resized to
//!    512×512 with nearest-neighbour sampling, as `pdqio.cpp` does;
//! 2. RGB → luminance with the Rec. 601 weights;
//! 3. a Jarosz tent filter (two X,Y passes of box filters whose window is
//!    1/128 of the side, rounded up), then decimation to 64×64;
//! 4. the quality score from the gradients of that 64×64 image;
//! 5. a 2-D DCT keeping the 16×16 lowest frequencies after the DC term;
//! 6. one bit per coefficient: set when it is above the median.
//!
//! The 8 dihedral variants (rotations and flips of the picture) come from
//! sign changes and a transposition of the 16×16 DCT block, as in the
//! reference, so matching a rotated or mirrored copy costs no second hash.
//!
//! Published guidance for PDQ: a Hamming distance of [`MATCH_DISTANCE`] or
//! less is a match, and hashes with a quality below [`MIN_MATCH_QUALITY`]
//! should not be matched at all.

use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use crate::orientation::{Mapping, Oriented};
use image::RgbImage;

/// Hamming distance at or below which two PDQ hashes are the same picture
/// (ThreatExchange's published threshold).
pub const MATCH_DISTANCE: u32 = 31;

/// Quality below which a hash should not be matched: such images (blank,
/// nearly uniform) give hashes that are mostly noise (ThreatExchange's
/// guidance is to drop quality 49 or less).
pub const MIN_MATCH_QUALITY: u8 = 50;

/// `DOWNSAMPLE_DIMS` in the reference's `pdqio.cpp`: "the two-pass Jarosz
/// filter is prohibitively expensive for larger images", so anything larger
/// is first resized to this square. The reference's hashes (and thus the
/// corpus) are computed this way, so we do the same; it also makes the cost
/// of a hash independent of the image size (a few milliseconds).
pub(crate) const DOWNSAMPLE_DIMS: usize = 512;

/// `MIN_HASHABLE_DIM` in `pdqhashing.cpp`: smaller images hash to all zeros
/// with quality 0.
const MIN_HASHABLE_DIM: usize = 5;

/// Side of the decimated luminance image that the DCT runs on.
const SIDE: usize = 64;

/// Side of the kept DCT block: 16×16 = 256 bits.
const DCT_SIDE: usize = 16;

/// `PDQ_NUM_JAROSZ_XY_PASSES`: two X,Y pairs of box filters approximate a
/// tent filter (Jarosz, "Fast Image Convolutions", SIGGRAPH 2001).
const JAROSZ_XY_PASSES: usize = 2;

// Rec. 601 luma weights, `luma_from_{R,G,B}_coeff` in the reference.
const LUMA_R: f32 = 0.299;
const LUMA_G: f32 = 0.587;
const LUMA_B: f32 = 0.114;

/// A 256-bit PDQ hash.
///
/// Bit `k` (0–255) is DCT coefficient `(k / 16, k % 16)`. The bytes are in
/// the order of the reference's hex rendering: byte 0 holds bits 255–248
/// and byte 31 holds bits 7–0, so the hex text is the 32 bytes in order and
/// compares directly with hashes from other PDQ implementations.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash([u8; 32]);

impl Hash {
    /// The all-zero hash (what images too small to hash get).
    pub const ZERO: Hash = Hash([0; 32]);

    /// A hash from its 32 bytes, in hex-rendering order.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Hash(bytes)
    }

    /// The 32 bytes, in hex-rendering order (for storage).
    pub const fn to_bytes(self) -> [u8; 32] {
        self.0
    }

    /// Bit `k` (0–255) in the reference's numbering; `false` beyond 255.
    pub fn bit(&self, k: usize) -> bool {
        k < 256 && self.0[31 - k / 8] & (1 << (k % 8)) != 0
    }

    fn set_bit(&mut self, k: usize) {
        self.0[31 - k / 8] |= 1 << (k % 8);
    }

    /// Number of differing bits (see [`distance`]).
    pub fn distance(&self, other: &Hash) -> u32 {
        distance(self, other)
    }
}

impl fmt::Display for Hash {
    /// 64 lowercase hex digits, as the reference's `Hash256::format`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({self})")
    }
}

/// Text that is not a PDQ hash in hex.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("a PDQ hash is written as 64 hexadecimal digits: {0}")]
pub struct ParseHashError(hex::FromHexError);

impl FromStr for Hash {
    type Err = ParseHashError;

    /// Parses 64 hex digits (either case), as the reference's `Hash256`
    /// constructor.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(s, &mut bytes).map_err(ParseHashError)?;
        Ok(Hash(bytes))
    }
}

/// A PDQ hash with its quality score.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pdq {
    /// The 256-bit hash.
    pub hash: Hash,
    /// 0–100: how much significant gradient the image has. Blank or nearly
    /// uniform images score low; see [`MIN_MATCH_QUALITY`].
    pub quality: u8,
}

/// The 8 dihedral transforms, in the order [`dihedral`] returns them (the
/// reference's order). Each names the transform that, applied to the hashed
/// image, gives the picture whose plain hash that variant approximates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dihedral {
    /// The image as it is.
    Original = 0,
    /// Rotated a quarter turn counter-clockwise.
    Rotate90 = 1,
    /// Rotated a half turn.
    Rotate180 = 2,
    /// Rotated a quarter turn clockwise.
    Rotate270 = 3,
    /// Mirrored top to bottom (rows reversed).
    FlipX = 4,
    /// Mirrored left to right (columns reversed).
    FlipY = 5,
    /// Mirrored about the main diagonal (transposed).
    FlipPlus1 = 6,
    /// Mirrored about the anti-diagonal.
    FlipMinus1 = 7,
}

impl Dihedral {
    /// All 8, in array order.
    pub const ALL: [Dihedral; 8] = [
        Dihedral::Original,
        Dihedral::Rotate90,
        Dihedral::Rotate180,
        Dihedral::Rotate270,
        Dihedral::FlipX,
        Dihedral::FlipY,
        Dihedral::FlipPlus1,
        Dihedral::FlipMinus1,
    ];
}

/// Number of bits in which two hashes differ (0–256).
pub fn distance(a: &Hash, b: &Hash) -> u32 {
    a.0.iter()
        .zip(&b.0)
        .map(|(x, y)| (x ^ y).count_ones())
        .sum()
}

/// Dihedral matching: the smallest distance between `other` and any of the
/// 8 variants of one image, so a rotated or mirrored copy still matches.
pub fn dihedral_distance(variants: &[Hash; 8], other: &Hash) -> u32 {
    variants
        .iter()
        .map(|v| distance(v, other))
        .min()
        .unwrap_or(256)
}

/// The PDQ hash and quality of an image.
///
/// The image is hashed as its pixels are stored; use [`hash_oriented`] for
/// a picture with an EXIF orientation, so that copies differing only in how
/// their orientation is recorded hash alike.
pub fn hash(rgb: &RgbImage) -> Pdq {
    hash_mapped(rgb, Mapping::new(rgb.width(), rgb.height(), 1))
}

/// The PDQ hash of the upright picture: the same as [`hash`] of
/// [`Oriented::into_upright`], without turning the picture (the 512×512
/// samples are read where the orientation puts them).
pub fn hash_oriented(pixels: &Oriented) -> Pdq {
    hash_mapped(&pixels.stored, pixels.mapping())
}

fn hash_mapped(rgb: &RgbImage, map: Mapping) -> Pdq {
    match dct(rgb, map) {
        Some((coeffs, quality)) => Pdq {
            hash: bits(&coeffs),
            quality,
        },
        None => Pdq {
            hash: Hash::ZERO,
            quality: 0,
        },
    }
}

/// The hashes of the 8 dihedral transforms of an image, in [`Dihedral`]
/// order; element 0 equals [`hash`]'s.
pub fn dihedral(rgb: &RgbImage) -> [Hash; 8] {
    hash_with_dihedral(rgb).1
}

/// [`hash`] and [`dihedral`] from one pass over the image.
pub fn hash_with_dihedral(rgb: &RgbImage) -> (Pdq, [Hash; 8]) {
    let Some((coeffs, quality)) = dct(rgb, Mapping::new(rgb.width(), rgb.height(), 1)) else {
        let zero = Pdq {
            hash: Hash::ZERO,
            quality: 0,
        };
        return (zero, [Hash::ZERO; 8]);
    };
    let variants = Dihedral::ALL.map(|d| bits(&transform(&coeffs, d)));
    (
        Pdq {
            hash: variants[0],
            quality,
        },
        variants,
    )
}

type Block = [[f32; DCT_SIDE]; DCT_SIDE];

/// The 16×16 DCT block and the quality, or `None` for images too small to
/// hash.
fn dct(rgb: &RgbImage, map: Mapping) -> Option<(Block, u8)> {
    let (mut luma, rows, cols) = luminance(rgb, map);
    if rows < MIN_HASHABLE_DIM || cols < MIN_HASHABLE_DIM {
        return None;
    }
    let small = if rows == SIDE && cols == SIDE {
        // The reference skips the filter when the input already is 64×64
        // (pdqFloat256FromFloatLuma); its window would be 1 anyway.
        let mut out = [[0f32; SIDE]; SIDE];
        for (row, chunk) in out.iter_mut().zip(luma.chunks_exact(SIDE)) {
            row.copy_from_slice(chunk);
        }
        out
    } else {
        let mut scratch = vec![0f32; luma.len()];
        jarosz_filter(
            &mut luma,
            &mut scratch,
            rows,
            cols,
            window_size(cols),
            window_size(rows),
        );
        decimate(&luma, rows, cols)
    };
    Some((dct64_to_16(&small), quality(&small)))
}

/// Row-major luminance of the image, after the reference's 512×512
/// nearest-neighbour resize of larger images; returns (luma, rows, cols).
fn luminance(rgb: &RgbImage, map: Mapping) -> (Vec<f32>, usize, usize) {
    let stride = rgb.width() as usize;
    let raw = rgb.as_raw();
    // Where upright pixel (x, y) is stored: each orientation takes the
    // stored column from one upright axis and the row from the other, so
    // the byte offset is a part from x plus a part from y, looked up once
    // per column and once per row.
    let offset = |x: u32, y: u32| {
        let (sx, sy) = map.source(x, y);
        3 * (sy as usize * stride + sx as usize)
    };
    let luma = |p: usize| {
        LUMA_R * f32::from(raw[p]) + LUMA_G * f32::from(raw[p + 1]) + LUMA_B * f32::from(raw[p + 2])
    };
    let (w, h) = map.dimensions();
    let (w, h) = (w as usize, h as usize);
    // CImg's `resize(512, 512)` (default interpolation: nearest neighbour)
    // takes source pixel floor(x * old / new) along each axis, squashing
    // the aspect ratio as the reference does. u64 keeps x * old exact.
    // Images no larger are read whole.
    let sampled = |old: usize| -> Vec<u32> {
        if w <= DOWNSAMPLE_DIMS && h <= DOWNSAMPLE_DIMS {
            (0..old as u32).collect()
        } else {
            (0..DOWNSAMPLE_DIMS as u64)
                .map(|i| (i * old as u64 / DOWNSAMPLE_DIMS as u64) as u32)
                .collect()
        }
    };
    let (xs, ys) = (sampled(w), sampled(h));
    let origin = offset(0, 0) as isize;
    let columns: Vec<isize> = xs.iter().map(|&x| offset(x, 0) as isize - origin).collect();
    let mut out = Vec::with_capacity(xs.len() * ys.len());
    for &y in &ys {
        let row = offset(0, y) as isize;
        out.extend(columns.iter().map(|&c| luma((row + c) as usize)));
    }
    (out, ys.len(), xs.len())
}

/// `computeJaroszFilterWindowSize(old, 64)`: half of the 1/64 block per
/// pass (two passes cover a whole block), rounded up.
fn window_size(old: usize) -> usize {
    old.div_ceil(2 * SIDE)
}

/// `jaroszFilterFloat`: X then Y box filters, twice; the result is back in
/// `buf`.
fn jarosz_filter(
    buf: &mut [f32],
    scratch: &mut [f32],
    rows: usize,
    cols: usize,
    window_along_rows: usize,
    window_along_cols: usize,
) {
    for _ in 0..JAROSZ_XY_PASSES {
        for (input, output) in buf.chunks_exact(cols).zip(scratch.chunks_exact_mut(cols)) {
            box_1d(input, output, cols, 1, window_along_rows);
        }
        box_columns(scratch, buf, rows, cols, window_along_cols);
    }
}

/// [`box_1d`] down every column at once: the same sums, in the same order,
/// for each column (so the same rounding), but a row at a time, which reads
/// memory in order and vectorises (the column-by-column walk, 512 floats
/// apart, was a third of a 12 MP photo's hash).
fn box_columns(input: &[f32], output: &mut [f32], rows: usize, cols: usize, window: usize) {
    let half = (window + 2) / 2;
    let phase_1 = half - 1;
    let phase_2 = window - half + 1;
    let phase_3 = rows.saturating_sub(window);
    let phase_4 = half - 1;
    let row = |i: usize| &input[i * cols..(i + 1) * cols];
    let (mut li, mut ri, mut oi) = (0usize, 0usize, 0usize);
    let mut sums = vec![0f32; cols];
    let mut count = 0usize;
    let mut write = |oi: usize, sums: &[f32], count: usize| {
        for (o, s) in output[oi * cols..(oi + 1) * cols].iter_mut().zip(sums) {
            *o = s / count as f32;
        }
    };
    for _ in 0..phase_1 {
        sums.iter_mut().zip(row(ri)).for_each(|(s, v)| *s += v);
        count += 1;
        ri += 1;
    }
    for _ in 0..phase_2 {
        sums.iter_mut().zip(row(ri)).for_each(|(s, v)| *s += v);
        count += 1;
        write(oi, &sums, count);
        ri += 1;
        oi += 1;
    }
    for _ in 0..phase_3 {
        for ((s, add), sub) in sums.iter_mut().zip(row(ri)).zip(row(li)) {
            *s += add;
            *s -= sub;
        }
        write(oi, &sums, count);
        li += 1;
        ri += 1;
        oi += 1;
    }
    for _ in 0..phase_4 {
        sums.iter_mut().zip(row(li)).for_each(|(s, v)| *s -= v);
        count -= 1;
        write(oi, &sums, count);
        li += 1;
        oi += 1;
    }
}

/// `box1DFloat`: a running-sum box filter over `len` elements `stride`
/// apart, with a window of `window` centred as the reference centres it
/// (for an even window, one more element after than before) and shrunk at
/// the ends. The summation order is the reference's, so rounding matches.
fn box_1d(input: &[f32], output: &mut [f32], len: usize, stride: usize, window: usize) {
    let half = (window + 2) / 2;
    let phase_1 = half - 1;
    let phase_2 = window - half + 1;
    let phase_3 = len.saturating_sub(window);
    let phase_4 = half - 1;

    let (mut li, mut ri, mut oi) = (0usize, 0usize, 0usize);
    let mut sum = 0f32;
    let mut count = 0usize;
    // Accumulate the leading half window without writing.
    for _ in 0..phase_1 {
        sum += input[ri];
        count += 1;
        ri += stride;
    }
    // Growing window at the start.
    for _ in 0..phase_2 {
        sum += input[ri];
        count += 1;
        output[oi] = sum / count as f32;
        ri += stride;
        oi += stride;
    }
    // Full window sliding.
    for _ in 0..phase_3 {
        sum += input[ri];
        sum -= input[li];
        output[oi] = sum / count as f32;
        li += stride;
        ri += stride;
        oi += stride;
    }
    // Shrinking window at the end.
    for _ in 0..phase_4 {
        sum -= input[li];
        count -= 1;
        output[oi] = sum / count as f32;
        li += stride;
        oi += stride;
    }
}

/// `decimateFloat` to 64×64: the filtered pixel nearest each target centre.
fn decimate(buf: &[f32], rows: usize, cols: usize) -> [[f32; SIDE]; SIDE] {
    let centre = |i: usize, n: usize| (((i as f64 + 0.5) * n as f64) / SIDE as f64) as usize;
    let mut out = [[0f32; SIDE]; SIDE];
    for (i, row) in out.iter_mut().enumerate() {
        let src = centre(i, rows) * cols;
        for (j, v) in row.iter_mut().enumerate() {
            *v = buf[src + centre(j, cols)];
        }
    }
    out
}

/// `pdqImageDomainQualityMetric`: the sum of the vertical and horizontal
/// gradients, each quantised to whole percent of the 0–255 range (so only
/// significant gradients count), divided by 90 and capped at 100. The
/// constants are the reference's hand-tuned ones (see `hashing.pdf`).
fn quality(a: &[[f32; SIDE]; SIDE]) -> u8 {
    // `as i32` truncates toward zero, as the reference's float-to-int.
    let step = |u: f32, v: f32| ((((u - v) * 100.0) / 255.0) as i32).abs();
    let mut gradient_sum: i32 = 0;
    for pair in a.windows(2) {
        for (&u, &v) in pair[0].iter().zip(&pair[1]) {
            gradient_sum += step(u, v);
        }
    }
    for row in a {
        for pair in row.windows(2) {
            gradient_sum += step(pair[0], pair[1]);
        }
    }
    (gradient_sum / 90).min(100) as u8
}

/// Rows 1–16 of the 64-point DCT-II matrix (row 0, the DC term, carries
/// only brightness and is left out), scaled by sqrt(2/64), in `f32` as the
/// reference's `dct_matrix_64` (Zauner 2010).
static DCT_MATRIX: LazyLock<[[f32; SIDE]; DCT_SIDE]> = LazyLock::new(|| {
    let scale = (2.0f64 / SIDE as f64).sqrt() as f32;
    let mut m = [[0f32; SIDE]; DCT_SIDE];
    for (i, row) in m.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            let angle =
                (std::f64::consts::PI / 2.0 / SIDE as f64) * (i + 1) as f64 * (2 * j + 1) as f64;
            *v = (f64::from(scale) * angle.cos()) as f32;
        }
    }
    m
});

/// `dct64To16`: B = D A Dᵀ for the 16×64 matrix D, only the coefficients
/// we keep (the reference measured this to be faster than a fast DCT of
/// all 64), summing in the reference's order.
fn dct64_to_16(a: &[[f32; SIDE]; SIDE]) -> Block {
    let d = &*DCT_MATRIX;
    let mut t = [[0f32; SIDE]; DCT_SIDE];
    for (t_row, d_row) in t.iter_mut().zip(d) {
        for (j, t_ij) in t_row.iter_mut().enumerate() {
            *t_ij = d_row
                .iter()
                .zip(a)
                .fold(0f32, |s, (dk, a_row)| s + dk * a_row[j]);
        }
    }
    let mut b = [[0f32; DCT_SIDE]; DCT_SIDE];
    for (b_row, t_row) in b.iter_mut().zip(&t) {
        for (b_ij, d_row) in b_row.iter_mut().zip(d) {
            *b_ij = t_row
                .iter()
                .zip(d_row)
                .fold(0f32, |s, (tk, dk)| s + tk * dk);
        }
    }
    b
}

/// `pdqBuffer16x16ToBits`: bit `16 i + j` is set when coefficient (i, j) is
/// above the median, so about half the bits are set whatever the image.
fn bits(b: &Block) -> Hash {
    let mut flat = [0f32; DCT_SIDE * DCT_SIDE];
    for (chunk, row) in flat.chunks_exact_mut(DCT_SIDE).zip(b) {
        chunk.copy_from_slice(row);
    }
    // The reference's Torben median returns the lower median, the
    // ((n + 1) / 2)-th smallest = index 127 of 256.
    let (_, &mut median, _) = flat.select_nth_unstable_by(127, f32::total_cmp);
    let mut hash = Hash::ZERO;
    for (i, row) in b.iter().enumerate() {
        for (j, &v) in row.iter().enumerate() {
            if v > median {
                hash.set_bit(i * DCT_SIDE + j);
            }
        }
    }
    hash
}

/// The DCT block of a rotated or mirrored image, from the original's
/// (`dct16OriginalTo*` in the reference). Reversing an axis multiplies the
/// coefficient of frequency u along it by (-1)^u; row/column index i holds
/// frequency i + 1, so even indices change sign. A quarter turn or a
/// diagonal mirror also swaps the axes (a transposition).
fn transform(a: &Block, d: Dihedral) -> Block {
    let odd = |k: usize| k & 1 == 1;
    let mut b = [[0f32; DCT_SIDE]; DCT_SIDE];
    for (i, row) in a.iter().enumerate() {
        for (j, &v) in row.iter().enumerate() {
            let (negate, transpose) = match d {
                Dihedral::Original => (false, false),
                Dihedral::Rotate90 => (!odd(j), true),
                Dihedral::Rotate180 => (odd(i + j), false),
                Dihedral::Rotate270 => (!odd(i), true),
                Dihedral::FlipX => (!odd(i), false),
                Dihedral::FlipY => (!odd(j), false),
                Dihedral::FlipPlus1 => (false, true),
                Dihedral::FlipMinus1 => (odd(i + j), true),
            };
            let v = if negate { -v } else { v };
            if transpose {
                b[j][i] = v;
            } else {
                b[i][j] = v;
            }
        }
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    const BRIDGE: &str = "d8f8f0cee0f4a84f0637022a078f67f0b36e2ed596621e1d33e6339c4e9c9b22";

    #[test]
    fn hex_round_trips_in_the_reference_rendering() {
        let h: Hash = BRIDGE.parse().unwrap();
        assert_eq!(h.to_string(), BRIDGE);
        assert_eq!(BRIDGE.to_uppercase().parse::<Hash>().unwrap(), h);
        assert_eq!(Hash::from_bytes(h.to_bytes()), h);
        assert_eq!(format!("{h:?}"), format!("Hash({BRIDGE})"));
    }

    #[test]
    fn bit_zero_is_the_last_hex_digit_and_bit_255_the_first() {
        // The reference prints 16-bit word 15 first and bit k lives in word
        // k / 16 at k % 16, so bit 0 is the low bit of the last digit.
        let mut h = Hash::ZERO;
        h.set_bit(0);
        assert_eq!(h.to_string(), format!("{}1", "0".repeat(63)));
        let mut h = Hash::ZERO;
        h.set_bit(255);
        assert_eq!(h.to_string(), format!("8{}", "0".repeat(63)));
        let mut h = Hash::ZERO;
        h.set_bit(17);
        assert_eq!(h.to_string(), format!("{}00020000", "0".repeat(56)));
        assert!(h.bit(17) && !h.bit(16) && !h.bit(300));
    }

    #[test]
    fn malformed_hex_is_rejected() {
        assert!("".parse::<Hash>().is_err());
        assert!(BRIDGE[..62].parse::<Hash>().is_err());
        assert!(format!("{BRIDGE}00").parse::<Hash>().is_err());
        let bad = format!("g{}", &BRIDGE[1..]);
        let err = bad.parse::<Hash>().unwrap_err();
        assert!(err.to_string().contains("64 hexadecimal digits"), "{err}");
    }

    proptest::proptest! {
        #[test]
        fn any_hash_round_trips_through_hex(bytes: [u8; 32]) {
            let h = Hash::from_bytes(bytes);
            proptest::prop_assert_eq!(h.to_string().parse::<Hash>(), Ok(h));
        }

        #[test]
        fn parsing_arbitrary_text_never_panics(s in "\\PC{0,80}") {
            let _ = s.parse::<Hash>();
        }
    }

    #[test]
    fn distance_counts_differing_bits() {
        let ones = Hash::from_bytes([0xFF; 32]);
        assert_eq!(distance(&Hash::ZERO, &Hash::ZERO), 0);
        assert_eq!(distance(&Hash::ZERO, &ones), 256);
        let mut h = Hash::ZERO;
        for k in [0, 7, 8, 100, 255] {
            h.set_bit(k);
        }
        assert_eq!(distance(&Hash::ZERO, &h), 5);
        assert_eq!(h.distance(&ones), 251);
        let b: Hash = BRIDGE.parse().unwrap();
        assert_eq!(distance(&b, &b), 0);
        let mut variants = [ones; 8];
        variants[5] = h;
        assert_eq!(dihedral_distance(&variants, &Hash::ZERO), 5);
    }

    #[test]
    fn window_size_is_half_a_block_rounded_up() {
        assert_eq!(window_size(1024), 8);
        assert_eq!(window_size(512), 4);
        assert_eq!(window_size(64), 1);
        assert_eq!(window_size(129), 2);
        assert_eq!(window_size(5), 1);
    }

    #[test]
    fn box_filter_matches_the_reference_worked_examples() {
        // downscaling.cpp's comments: inputs 0..15, windows 7 and 8.
        let input: Vec<f32> = (0..16).map(|v| v as f32).collect();
        let mut out = vec![0f32; 16];
        box_1d(&input, &mut out, 16, 1, 7);
        let sums7 = [
            6, 10, 15, 21, 28, 35, 42, 49, 56, 63, 70, 77, 84, 75, 65, 54,
        ];
        let counts7 = [4, 5, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 6, 5, 4];
        for k in 0..16 {
            assert_eq!(out[k], sums7[k] as f32 / counts7[k] as f32, "window 7, {k}");
        }
        box_1d(&input, &mut out, 16, 1, 8);
        let sums8 = [
            10, 15, 21, 28, 36, 44, 52, 60, 68, 76, 84, 92, 84, 75, 65, 54,
        ];
        let counts8 = [5, 6, 7, 8, 8, 8, 8, 8, 8, 8, 8, 8, 7, 6, 5, 4];
        for k in 0..16 {
            assert_eq!(out[k], sums8[k] as f32 / counts8[k] as f32, "window 8, {k}");
        }
        // A window of 1 is the identity.
        box_1d(&input, &mut out, 16, 1, 1);
        assert_eq!(out, input);
    }

    #[test]
    fn box_columns_matches_box_1d_down_each_column_bit_for_bit() {
        let (rows, cols) = (37, 11);
        let mut state = 0x9E37_79B9u32;
        let input: Vec<f32> = (0..rows * cols)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state % 25_500) as f32 / 100.0
            })
            .collect();
        for window in [1, 2, 3, 8, 9, 36] {
            let mut by_rows = vec![0f32; rows * cols];
            box_columns(&input, &mut by_rows, rows, cols, window);
            let mut by_column = vec![0f32; rows * cols];
            for j in 0..cols {
                box_1d(&input[j..], &mut by_column[j..], rows, cols, window);
            }
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&by_rows), bits(&by_column), "window {window}");
        }
    }

    #[test]
    fn images_too_small_hash_to_zero_with_quality_zero() {
        let tiny = RgbImage::from_pixel(4, 100, image::Rgb([10, 200, 30]));
        assert_eq!(
            hash(&tiny),
            Pdq {
                hash: Hash::ZERO,
                quality: 0
            }
        );
        assert_eq!(dihedral(&tiny), [Hash::ZERO; 8]);
        assert_eq!(hash(&RgbImage::new(0, 0)).quality, 0);
    }

    /// A deterministic textured test picture: random grey blocks of 13×13
    /// pixels. A smooth picture, or blocks that tile the 64-sample grid
    /// (16 pixels on a 64-pixel side), leaves DCT coefficients at zero,
    /// where rounding alone decides their bits.
    fn pattern(w: u32, h: u32) -> RgbImage {
        let block = |bx: u32, by: u32| {
            let mut x = (bx * 7919 + by * 104_729) as u64 ^ 0x9E37_79B9_7F4A_7C15;
            x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x ^= x >> 31;
            (x % 256) as u8
        };
        RgbImage::from_fn(w, h, |x, y| {
            let l = block(x / 13, y / 13);
            image::Rgb([l, l.saturating_add(20), l / 2])
        })
    }

    /// `img` transformed as `d` names.
    fn transformed(img: &RgbImage, d: Dihedral) -> RgbImage {
        use image::imageops;
        match d {
            Dihedral::Original => img.clone(),
            Dihedral::Rotate90 => imageops::rotate270(img),
            Dihedral::Rotate180 => imageops::rotate180(img),
            Dihedral::Rotate270 => imageops::rotate90(img),
            Dihedral::FlipX => imageops::flip_vertical(img),
            Dihedral::FlipY => imageops::flip_horizontal(img),
            Dihedral::FlipPlus1 => imageops::flip_horizontal(&imageops::rotate90(img)),
            Dihedral::FlipMinus1 => imageops::flip_horizontal(&imageops::rotate270(img)),
        }
    }

    #[test]
    fn each_dihedral_variant_is_the_hash_of_that_transform() {
        // Sides of 320 and 64 pixels make the pipeline mirror-symmetric:
        // decimation picks pixels 5i + 2 (or i), which a flip maps onto each
        // other, and the box windows (3 and 1) are odd, so centred. Other
        // sizes sample a mirrored image a pixel off and differ by 10-20
        // bits (see the dih corpus test); here only rounding may differ.
        for (w, h) in [(320, 320), (320, 64), (64, 320)] {
            let img = pattern(w, h);
            let variants = dihedral(&img);
            assert_eq!(variants[0], hash(&img).hash);
            for d in Dihedral::ALL {
                let direct = hash(&transformed(&img, d)).hash;
                for (k, v) in variants.iter().enumerate() {
                    let dist = distance(v, &direct);
                    if k == d as usize {
                        assert!(dist <= 2, "{w}x{h} {d:?}: {dist} bits from its variant");
                    } else {
                        assert!(
                            dist > MATCH_DISTANCE,
                            "{w}x{h} {d:?}: variant {k} too close"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn an_oriented_picture_hashes_as_its_upright_copy() {
        // Small (every pixel read) and large (512×512 sampled), odd sizes.
        for (w, h) in [(300, 200), (1201, 677)] {
            let img = pattern(w, h);
            for o in 1..=8u16 {
                let pixels = Oriented {
                    stored: img.clone(),
                    orientation: o,
                };
                let want = hash(&pixels.clone().into_upright());
                assert_eq!(hash_oriented(&pixels), want, "{w}x{h}, orientation {o}");
            }
        }
    }

    #[test]
    fn uniform_image_has_quality_zero() {
        let blank = RgbImage::from_pixel(300, 200, image::Rgb([128, 128, 128]));
        assert_eq!(hash(&blank).quality, 0);
        assert!(hash(&pattern(300, 200)).quality >= MIN_MATCH_QUALITY);
    }
}
