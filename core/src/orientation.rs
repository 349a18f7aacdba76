//! Turning decoded pixels upright by their EXIF orientation, for PDQ, the
//! quality and ML checks and thumbnails: what a viewer shows is what is
//! hashed and checked. The stored file keeps its pixels as they are and the
//! orientation as a tag ([`crate::exif`]).
//!
//! Turning a whole 12 MP photo costs about as much as decoding it, and
//! none of the checks needs it whole: PDQ samples 512×512 pixels, the
//! quality and ML checks a few hundred thousand. So the pipeline hands on
//! the pixels as stored with their orientation ([`Oriented`]); PDQ reads
//! each upright pixel where [`Mapping`] says it is, and the ML inputs turn
//! the photo after shrinking it.

use image::metadata::Orientation;
use image::{DynamicImage, RgbImage};

/// Turns an image upright according to its EXIF orientation (1–8, EXIF
/// semantics); other values (0, absent, out of range) leave it unchanged,
/// as EXIF readers treat them as 1.
pub fn apply_orientation(img: RgbImage, exif_orientation: u16) -> RgbImage {
    let Some(orientation) = u8::try_from(exif_orientation)
        .ok()
        .and_then(Orientation::from_exif)
    else {
        return img;
    };
    if orientation == Orientation::NoTransforms {
        return img;
    }
    if let 5..=8 = exif_orientation {
        return transposed(&img, exif_orientation);
    }
    let mut dynamic = DynamicImage::ImageRgb8(img);
    dynamic.apply_orientation(orientation);
    dynamic.into_rgb8()
}

/// Decoded pixels as stored, with the EXIF orientation (1–8) that turns
/// them upright.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Oriented {
    /// The pixels as the file stores them.
    pub stored: RgbImage,
    /// EXIF orientation; anything but 2–8 means as stored.
    pub orientation: u16,
}

impl Oriented {
    /// Pixels already upright.
    pub fn upright(rgb: RgbImage) -> Self {
        Self {
            stored: rgb,
            orientation: 1,
        }
    }

    /// Where each upright pixel is in [`Self::stored`].
    pub fn mapping(&self) -> Mapping {
        Mapping::new(self.stored.width(), self.stored.height(), self.orientation)
    }

    /// Width and height as a viewer shows the picture.
    pub fn dimensions(&self) -> (u32, u32) {
        self.mapping().dimensions()
    }

    /// The whole picture turned upright (a copy of every pixel for
    /// orientations 2–8).
    pub fn into_upright(self) -> RgbImage {
        apply_orientation(self.stored, self.orientation)
    }
}

/// Where the pixel at column x, row y of the upright picture lies in the
/// stored one: EXIF orientation as a coordinate map, so that a check can
/// sample an upright picture without turning it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    orientation: u8,
    /// Stored width and height.
    w: u32,
    h: u32,
}

impl Mapping {
    /// The map for a picture stored `w` × `h` with this EXIF orientation;
    /// values outside 1–8 map every pixel to itself, as in
    /// [`apply_orientation`].
    pub fn new(w: u32, h: u32, exif_orientation: u16) -> Self {
        let orientation = match exif_orientation {
            o @ 2..=8 => o as u8,
            _ => 1,
        };
        Self { orientation, w, h }
    }

    /// Upright width and height.
    pub fn dimensions(&self) -> (u32, u32) {
        if self.orientation >= 5 {
            (self.h, self.w)
        } else {
            (self.w, self.h)
        }
    }

    /// The stored position of upright pixel (x, y).
    #[inline]
    pub fn source(&self, x: u32, y: u32) -> (u32, u32) {
        let (w, h) = (self.w, self.h);
        match self.orientation {
            2 => (w - 1 - x, y),
            3 => (w - 1 - x, h - 1 - y),
            4 => (x, h - 1 - y),
            5 => (y, x),
            6 => (y, h - 1 - x),
            7 => (w - 1 - y, h - 1 - x),
            8 => (w - 1 - y, x),
            _ => (x, y),
        }
    }
}

/// EXIF orientations 5–8 (what phones write for portrait photos) swap
/// width and height. `image` turns such an image a pixel at a time through
/// its generic accessors, about 100 ms for 12 MP; this copies whole pixels
/// in 32×32 tiles, so reads and writes both stay in cache, each to where
/// the orientation puts it.
fn transposed(img: &RgbImage, exif_orientation: u16) -> RgbImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let (src, _) = img.as_raw().as_chunks::<3>();
    let mut buffer = crate::pixels::zeroed(src.len() * 3);
    let (out, _) = buffer.as_chunks_mut::<3>();
    // Where the pixel at column x, row y goes: the index in an image `h`
    // wide and `w` tall. One loop per orientation, so nothing is decided
    // per pixel.
    match exif_orientation {
        5 => tiles(w, h, src, out, |x, y| x * h + y),
        6 => tiles(w, h, src, out, |x, y| x * h + (h - 1 - y)),
        7 => tiles(w, h, src, out, |x, y| (w - 1 - x) * h + (h - 1 - y)),
        _ => tiles(w, h, src, out, |x, y| (w - 1 - x) * h + y),
    }
    RgbImage::from_raw(h as u32, w as u32, buffer).expect("same number of pixels")
}

fn tiles(
    w: usize,
    h: usize,
    src: &[[u8; 3]],
    out: &mut [[u8; 3]],
    to: impl Fn(usize, usize) -> usize,
) {
    const TILE: usize = 32;
    for ty in (0..h).step_by(TILE) {
        for tx in (0..w).step_by(TILE) {
            for y in ty..(ty + TILE).min(h) {
                let row = &src[y * w..(y + 1) * w];
                for x in tx..(tx + TILE).min(w) {
                    out[to(x, y)] = row[x];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_orientation_turns_pixels_as_image_does() {
        let img = RgbImage::from_fn(7, 5, |x, y| image::Rgb([x as u8, y as u8, (x * y) as u8]));
        for o in 1..=8u16 {
            let mut want = DynamicImage::ImageRgb8(img.clone());
            want.apply_orientation(Orientation::from_exif(o as u8).unwrap());
            assert_eq!(
                apply_orientation(img.clone(), o),
                want.into_rgb8(),
                "orientation {o}"
            );
        }
    }

    #[test]
    fn the_mapping_finds_every_upright_pixel_where_turning_puts_it() {
        let img = RgbImage::from_fn(7, 5, |x, y| image::Rgb([x as u8, y as u8, (x * y) as u8]));
        for o in 0..=9u16 {
            let pixels = Oriented {
                stored: img.clone(),
                orientation: o,
            };
            let map = pixels.mapping();
            let (w, h) = pixels.dimensions();
            let sampled = RgbImage::from_fn(w, h, |x, y| {
                let (sx, sy) = map.source(x, y);
                *img.get_pixel(sx, sy)
            });
            assert_eq!(sampled, pixels.into_upright(), "orientation {o}");
        }
    }

    #[test]
    fn orientation_is_applied_with_exif_semantics() {
        // A 2×1 image: left pixel red, right pixel blue.
        let mut img = RgbImage::new(2, 1);
        img.put_pixel(0, 0, image::Rgb([255, 0, 0]));
        img.put_pixel(1, 0, image::Rgb([0, 0, 255]));
        // 6: stored rotated 90° counter-clockwise; turn it clockwise.
        let r = apply_orientation(img.clone(), 6);
        assert_eq!(r.dimensions(), (1, 2));
        assert_eq!(r.get_pixel(0, 0)[0], 255);
        // 8: the other way.
        let r = apply_orientation(img.clone(), 8);
        assert_eq!(r.get_pixel(0, 0)[2], 255);
        // 2: mirrored.
        assert_eq!(apply_orientation(img.clone(), 2).get_pixel(0, 0)[2], 255);
        for unknown in [0, 1, 9, 300] {
            assert_eq!(apply_orientation(img.clone(), unknown), img);
        }
    }
}
