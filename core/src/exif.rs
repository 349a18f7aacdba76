//! EXIF, as far as picsift keeps any of it: the orientation tag. A phone
//! stores a portrait photo sideways and says so in EXIF; a stored image
//! that lost the tag displays sideways. So sanitising removes every EXIF
//! field (GPS, serial numbers, maker notes) but writes back a minimal
//! block with the orientation alone, the same for every format that
//! carries EXIF (JPEG APP1, PNG `eXIf`, WebP `EXIF`).

/// A TIFF structure (EXIF's, and MPF's index) read in its byte order.
pub(crate) struct Tiff<'a> {
    bytes: &'a [u8],
    little_endian: bool,
}

impl<'a> Tiff<'a> {
    /// `bytes` from the byte-order mark (`II*\0` or `MM\0*`) on.
    pub(crate) fn new(bytes: &'a [u8]) -> Option<Self> {
        let little_endian = match bytes.get(..4)? {
            b"II*\0" => true,
            b"MM\0*" => false,
            _ => return None,
        };
        Some(Self {
            bytes,
            little_endian,
        })
    }

    pub(crate) fn u16_at(&self, at: usize) -> Option<u16> {
        let b = [*self.bytes.get(at)?, *self.bytes.get(at + 1)?];
        Some(if self.little_endian {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        })
    }

    pub(crate) fn u32_at(&self, at: usize) -> Option<u32> {
        let b: [u8; 4] = self.bytes.get(at..at + 4)?.try_into().ok()?;
        Some(if self.little_endian {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    }

    /// The value offset field of IFD0's entry `tag` (12 bytes each: tag,
    /// type, count, value or offset), with its type and count.
    pub(crate) fn ifd0_entry(&self, tag: u16) -> Option<(u16, u32, usize)> {
        let ifd = self.u32_at(4)? as usize;
        let count = usize::from(self.u16_at(ifd)?);
        (0..count.min(512)).find_map(|n| {
            let e = ifd + 2 + n * 12;
            (self.u16_at(e)? == tag)
                .then(|| Some((self.u16_at(e + 2)?, self.u32_at(e + 4)?, e + 8)))?
        })
    }
}

/// Reads the orientation tag (0x0112) from IFD0 of an EXIF TIFF block;
/// `None` unless it is a SHORT of 1–8.
pub fn orientation(tiff: &[u8]) -> Option<u16> {
    let tiff = Tiff::new(tiff)?;
    let (kind, _, value) = tiff.ifd0_entry(0x0112)?;
    (kind == 3)
        .then(|| tiff.u16_at(value))
        .flatten()
        .filter(|o| (1..=8).contains(o))
}

/// A big-endian TIFF block whose only field is Orientation = `o`.
pub fn orientation_only(o: u16) -> Vec<u8> {
    let mut t = Vec::with_capacity(26);
    t.extend_from_slice(b"MM\0\x2a");
    t.extend_from_slice(&8u32.to_be_bytes()); // IFD0 right after the header
    t.extend_from_slice(&1u16.to_be_bytes()); // one entry:
    t.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation,
    t.extend_from_slice(&3u16.to_be_bytes()); // SHORT,
    t.extend_from_slice(&1u32.to_be_bytes()); // one value,
    t.extend_from_slice(&o.to_be_bytes()); // in the offset field,
    t.extend_from_slice(&[0, 0]); // left-justified
    t.extend_from_slice(&0u32.to_be_bytes()); // no IFD1
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_minimal_block_reads_back_as_its_orientation_and_nothing_else() {
        for o in 1..=8 {
            let t = orientation_only(o);
            assert_eq!(orientation(&t), Some(o));
            assert_eq!(t.len(), 26);
        }
    }

    #[test]
    fn orientation_is_read_little_endian_too() {
        let mut t = b"II\x2a\0\x08\0\0\0\x01\0".to_vec();
        t.extend_from_slice(&[0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0]);
        t.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(orientation(&t), Some(6));
    }

    #[test]
    fn values_outside_one_to_eight_are_no_orientation() {
        let mut t = orientation_only(1);
        t[18..20].copy_from_slice(&9u16.to_be_bytes());
        assert_eq!(orientation(&t), None);
        assert_eq!(orientation(b"MM\0\x2a\0\0\0\x08"), None, "cut short");
        assert_eq!(orientation(b"XX\0\x2a"), None, "no byte order");
    }
}
