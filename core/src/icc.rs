//! ICC colour profiles, kept with an image only when they parse as a valid
//! profile of a sane size. A Display P3 or Adobe RGB photo shown without
//! its profile has wrong colours; a profile is also a container of tagged
//! data of any size. The rule, the same for JPEG, PNG and WebP: a profile
//! that moxcms (the colour engine `image` uses) parses, whose declared size
//! is its length, and that is at most [`MAX_PROFILE_BYTES`], is kept byte
//! for byte; any other is dropped (the image then displays as sRGB).

/// Largest profile kept. Display profiles are a few KB, camera and printer
/// profiles with lookup tables a few hundred.
pub const MAX_PROFILE_BYTES: usize = 1 << 20;

/// Why `profile` is not kept, or `Ok` when it is.
pub fn check(profile: &[u8]) -> Result<(), String> {
    if profile.len() > MAX_PROFILE_BYTES {
        return Err(format!(
            "the ICC profile is {} bytes; at most {MAX_PROFILE_BYTES} are kept",
            profile.len()
        ));
    }
    let declared = profile
        .get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize);
    if declared != Some(profile.len()) {
        return Err(format!(
            "the ICC profile declares {declared:?} bytes but has {}",
            profile.len()
        ));
    }
    moxcms::ColorProfile::new_from_slice(profile)
        .map(drop)
        .map_err(|e| format!("the ICC profile does not parse: {e:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wide_gamut_profiles_are_kept_and_damaged_ones_dropped() {
        let p3 = moxcms::ColorProfile::new_display_p3().encode().unwrap();
        let adobe = moxcms::ColorProfile::new_adobe_rgb().encode().unwrap();
        assert_eq!(check(&p3), Ok(()));
        assert_eq!(check(&adobe), Ok(()));
        let mut cut = p3.clone();
        cut.truncate(p3.len() - 10);
        assert!(check(&cut).is_err(), "declared size disagrees");
        let mut no_magic = p3.clone();
        no_magic[36..40].copy_from_slice(b"XXXX");
        assert!(check(&no_magic).is_err(), "no acsp signature");
        assert!(check(b"<?php system($_GET[0]); ?>").is_err());
        let mut huge = vec![0u8; MAX_PROFILE_BYTES + 1];
        huge[..4].copy_from_slice(&((MAX_PROFILE_BYTES + 1) as u32).to_be_bytes());
        assert!(check(&huge).unwrap_err().contains("at most"));
    }
}
