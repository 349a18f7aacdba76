//! Keeping an HDR photo's gain map, for a policy that asks for it
//! (`gain_maps = keep`). An Ultra HDR JPEG (Android 14 on, and what
//! Chrome and Photoshop write) is an SDR primary image, an MPF index
//! (CIPA DC-007) and a second JPEG, the gain map, whose XMP says how to
//! apply it (the `hdrgm` namespace, Adobe's gain-map specification 1.0).
//! By default picsift stores the primary alone; kept, the gain map must
//! first decode strictly like any MPF image ([`crate::pipeline`]), and its
//! metadata must parse as finite, consistent numbers. What is stored is
//! then written anew, nothing of the upload's metadata copied: the
//! primary's sanitised bytes with a minimal XMP block (the gain-map
//! version and the container directory naming the two images) and a new
//! MPF index, then the gain map's sanitised bytes with a minimal XMP block
//! holding only the parsed numbers. Other gain-map flavours (Apple's
//! auxiliary images, ISO 21496-1's binary block) are dropped as before.

use std::fmt::Write as _;

/// Adobe's gain-map namespace (`hdrgm`).
const HDRGM: &str = "http://ns.adobe.com/hdr-gain-map/1.0/";

/// What starts an APP1 segment holding XMP.
const XMP_SIGNATURE: &[u8] = b"http://ns.adobe.com/xap/1.0/\0";

/// A gain map's parameters, each per channel (one value, or three for
/// red, green, blue) where the specification allows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Metadata {
    /// Values in [`FIELDS`] order.
    values: [Vec<f64>; FIELDS.len()],
    /// Whether the primary is the HDR rendition (and the map goes down).
    base_rendition_is_hdr: bool,
}

/// The numeric fields: name, default (`None`: required), and whether it
/// may have a value per channel.
const FIELDS: [(&str, Option<f64>, bool); 7] = [
    ("GainMapMin", Some(0.0), true),
    ("GainMapMax", None, true),
    ("Gamma", Some(1.0), true),
    ("OffsetSDR", Some(1.0 / 64.0), true),
    ("OffsetHDR", Some(1.0 / 64.0), true),
    ("HDRCapacityMin", Some(0.0), false),
    ("HDRCapacityMax", None, false),
];

impl Metadata {
    /// Reads a gain map's XMP packet (the APP1 body after the XMP
    /// signature). The reason it is not a usable gain map otherwise.
    pub fn parse(xmp: &[u8]) -> Result<Self, String> {
        let text = std::str::from_utf8(xmp).map_err(|_| "the XMP is not UTF-8".to_string())?;
        let found = hdrgm_properties(text)?;
        let get = |name: &str| found.iter().find(|(n, _)| n == name).map(|(_, v)| v);
        match get("Version").and_then(|v| v.first()) {
            Some(v) if v == "1.0" => {}
            Some(v) => return Err(format!("gain-map version {v:?} is not 1.0")),
            None => return Err("no hdrgm:Version: not a gain map".into()),
        }
        let mut values: [Vec<f64>; FIELDS.len()] = Default::default();
        for ((name, default, per_channel), slot) in FIELDS.iter().zip(&mut values) {
            *slot = match (get(name), default) {
                (Some(texts), _) => texts
                    .iter()
                    .map(|t| t.trim().parse::<f64>().ok().filter(|v| v.is_finite()))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| format!("hdrgm:{name} is not a finite number"))?,
                (None, Some(d)) => vec![*d],
                (None, None) => return Err(format!("hdrgm:{name} is missing")),
            };
            let allowed: &[usize] = if *per_channel { &[1, 3] } else { &[1] };
            if !allowed.contains(&slot.len()) {
                return Err(format!("hdrgm:{name} has {} values", slot.len()));
            }
        }
        let base_rendition_is_hdr = match get("BaseRenditionIsHDR").and_then(|v| v.first()) {
            None => false,
            Some(v) if v.eq_ignore_ascii_case("false") => false,
            Some(v) if v.eq_ignore_ascii_case("true") => true,
            Some(v) => return Err(format!("hdrgm:BaseRenditionIsHDR is {v:?}")),
        };
        let meta = Self {
            values,
            base_rendition_is_hdr,
        };
        meta.check()?;
        Ok(meta)
    }

    /// The specification's constraints: min ≤ max, a positive gamma,
    /// capacities ordered and not negative.
    fn check(&self) -> Result<(), String> {
        let [min, max, gamma, _, _, cap_min, cap_max] = &self.values;
        let channel = |v: &Vec<f64>, i: usize| v[i.min(v.len() - 1)];
        for i in 0..3 {
            if channel(min, i) > channel(max, i) {
                return Err("hdrgm:GainMapMin exceeds GainMapMax".into());
            }
            if channel(gamma, i) <= 0.0 {
                return Err("hdrgm:Gamma is not positive".into());
            }
        }
        if cap_min[0] < 0.0 || cap_min[0] > cap_max[0] {
            return Err("hdrgm:HDRCapacityMin/Max are out of order".into());
        }
        Ok(())
    }

    /// The gain map's new XMP packet: these numbers and nothing else.
    pub fn xmp(&self) -> String {
        let mut attributes = format!(
            " hdrgm:Version=\"1.0\" hdrgm:BaseRenditionIsHDR=\"{}\"",
            if self.base_rendition_is_hdr {
                "True"
            } else {
                "False"
            }
        );
        let mut elements = String::new();
        for ((name, _, _), v) in FIELDS.iter().zip(&self.values) {
            if let [one] = v.as_slice() {
                let _ = write!(attributes, " hdrgm:{name}=\"{one}\"");
            } else {
                let items: String = v.iter().map(|x| format!("<rdf:li>{x}</rdf:li>")).collect();
                let _ = write!(
                    elements,
                    "<hdrgm:{name}><rdf:Seq>{items}</rdf:Seq></hdrgm:{name}>"
                );
            }
        }
        packet(&format!(
            "<rdf:Description rdf:about=\"\" xmlns:hdrgm=\"{HDRGM}\"{attributes}>{elements}</rdf:Description>"
        ))
    }
}

/// An XMP packet around one `rdf:Description`.
fn packet(description: &str) -> String {
    format!(
        "<x:xmpmeta xmlns:x=\"adobe:ns:meta/\"><rdf:RDF xmlns:rdf=\"http://www.w3.org/1999/02/22-rdf-syntax-ns#\">{description}</rdf:RDF></x:xmpmeta>"
    )
}

/// The primary's XMP packet: the gain-map version and the container
/// directory (Ultra HDR's way of naming the second image and its length).
fn primary_xmp(gain_map_len: usize) -> String {
    packet(&format!(
        "<rdf:Description rdf:about=\"\" xmlns:hdrgm=\"{HDRGM}\" \
         xmlns:Container=\"http://ns.google.com/photos/1.0/container/\" \
         xmlns:Item=\"http://ns.google.com/photos/1.0/container/item/\" hdrgm:Version=\"1.0\">\
         <Container:Directory><rdf:Seq>\
         <rdf:li rdf:parseType=\"Resource\"><Container:Item Item:Semantic=\"Primary\" Item:Mime=\"image/jpeg\"/></rdf:li>\
         <rdf:li rdf:parseType=\"Resource\"><Container:Item Item:Semantic=\"GainMap\" Item:Mime=\"image/jpeg\" Item:Length=\"{gain_map_len}\"/></rdf:li>\
         </rdf:Seq></Container:Directory></rdf:Description>"
    ))
}

/// Every `hdrgm` property of the packet, by local name, with its value or
/// values (an attribute, an element's text, or an `rdf:Seq`'s items). A
/// packet with a DTD or entity declarations is refused: nothing in it is
/// expanded.
fn hdrgm_properties(text: &str) -> Result<Vec<(String, Vec<String>)>, String> {
    use xmlparser::{ElementEnd, Token, Tokenizer};
    let tokens = Tokenizer::from(text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the XMP does not parse: {e}"))?;
    // The prefixes bound to the namespace anywhere in the packet (scopes
    // are not tracked: a prefix bound to two namespaces is refused).
    let mut prefixes: Vec<(&str, &str)> = Vec::new();
    for t in &tokens {
        match t {
            Token::DtdStart { .. } | Token::EmptyDtd { .. } | Token::EntityDeclaration { .. } => {
                return Err("the XMP declares a DTD".into());
            }
            Token::Attribute {
                prefix,
                local,
                value,
                ..
            } if prefix.as_str() == "xmlns" => {
                let bound = (local.as_str(), value.as_str());
                if prefixes.iter().any(|&(p, v)| p == bound.0 && v != bound.1) {
                    return Err(format!("the XMP binds prefix {:?} twice", bound.0));
                }
                prefixes.push(bound);
            }
            _ => {}
        }
    }
    let is_hdrgm = |prefix: &str| prefixes.iter().any(|&(p, v)| p == prefix && v == HDRGM);
    let mut found: Vec<(String, Vec<String>)> = Vec::new();
    // The hdrgm element being read, if any, and the texts inside it.
    let mut open: Option<(String, Vec<String>)> = None;
    let mut depth_in = 0usize;
    for t in &tokens {
        match t {
            Token::Attribute {
                prefix,
                local,
                value,
                ..
            } if is_hdrgm(prefix.as_str()) => {
                found.push((local.to_string(), vec![value.to_string()]));
            }
            Token::ElementStart { prefix, local, .. } => match &open {
                Some(_) => depth_in += 1,
                None if is_hdrgm(prefix.as_str()) => {
                    open = Some((local.to_string(), Vec::new()));
                    depth_in = 0;
                }
                None => {}
            },
            Token::Text { text } => {
                if let Some((_, texts)) = &mut open
                    && !text.as_str().trim().is_empty()
                {
                    texts.push(text.as_str().trim().to_string());
                }
            }
            Token::ElementEnd { end, .. } => match (end, &mut open) {
                (ElementEnd::Open, _) | (_, None) => {}
                (ElementEnd::Empty | ElementEnd::Close(..), Some(_)) if depth_in > 0 => {
                    depth_in -= 1;
                }
                (ElementEnd::Empty | ElementEnd::Close(..), Some(_)) => {
                    found.extend(open.take());
                }
            },
            _ => {}
        }
    }
    if found
        .iter()
        .enumerate()
        .any(|(i, (n, _))| found[..i].iter().any(|(m, _)| m == n))
    {
        return Err("the XMP gives a gain-map property twice".into());
    }
    Ok(found)
}

/// The XMP packet of a JPEG (its first standard XMP segment), if any.
pub fn xmp_of(jpeg: &[u8], structure: &crate::jpeg::Structure) -> Option<Vec<u8>> {
    crate::jpeg::app_segments(jpeg, structure, 0xE1)
        .find_map(|body| body.strip_prefix(XMP_SIGNATURE))
        .map(<[u8]>::to_vec)
}

/// The file to store: `primary` (sanitised, ending at its end-of-image
/// marker) with a new XMP block and MPF index, then `gain_map`
/// (sanitised) with its new XMP block.
pub fn assemble(primary: &[u8], gain_map: &[u8], meta: &Metadata) -> Vec<u8> {
    let map = with_segments(gain_map, &[(0xE1, xmp_body(&meta.xmp()))]);
    let xmp = xmp_body(&primary_xmp(map.len()));
    let at = insertion_point(primary);
    // The MPF segment's size does not depend on its numbers, so its
    // position and the primary's final length are known before writing it.
    let mpf_len = 4 + mpf_body(0, 0, 0).len();
    let header_at = at + 4 + xmp.len() + 4 + 4;
    let primary_len = primary.len() + 4 + xmp.len() + mpf_len;
    let mpf = mpf_body(primary_len, map.len(), primary_len - header_at);
    let mut out = with_segments(primary, &[(0xE1, xmp), (0xE2, mpf)]);
    debug_assert_eq!(out.len(), primary_len);
    out.extend_from_slice(&map);
    out
}

fn xmp_body(packet: &str) -> Vec<u8> {
    [XMP_SIGNATURE, packet.as_bytes()].concat()
}

/// An APP2 `MPF` body: a big-endian MP header with the version, the number
/// of images (2) and their entries (the primary, then the gain map at
/// `offset` from the MP header).
fn mpf_body(primary_len: usize, map_len: usize, offset: usize) -> Vec<u8> {
    let u32be = |v: usize| u32::try_from(v).unwrap_or(u32::MAX).to_be_bytes();
    let mut b = b"MPF\0MM\0*".to_vec();
    b.extend_from_slice(&8u32.to_be_bytes());
    b.extend_from_slice(&3u16.to_be_bytes());
    // Tag, type (7 undefined, 4 long), count, value or offset.
    let entries_at = 8 + 2 + 3 * 12 + 4;
    for (tag, kind, count, value) in [
        (0xB000u16, 7u16, 4u32, u32::from_be_bytes(*b"0100")),
        (0xB001, 4, 1, 2),
        (0xB002, 7, 32, entries_at as u32),
    ] {
        b.extend_from_slice(&tag.to_be_bytes());
        b.extend_from_slice(&kind.to_be_bytes());
        b.extend_from_slice(&count.to_be_bytes());
        b.extend_from_slice(&value.to_be_bytes());
    }
    b.extend_from_slice(&0u32.to_be_bytes());
    // The primary: attribute "baseline MP primary image", offset 0.
    for (attribute, size, at) in [(0x0003_0000u32, primary_len, 0), (0, map_len, offset)] {
        b.extend_from_slice(&attribute.to_be_bytes());
        b.extend_from_slice(&u32be(size));
        b.extend_from_slice(&u32be(at));
        b.extend_from_slice(&[0; 4]);
    }
    b
}

/// Where new segments go: after the start-of-image marker and the APP0–
/// APP2 segments the sanitiser wrote (orientation, ICC profile).
fn insertion_point(jpeg: &[u8]) -> usize {
    let mut at = 2;
    while let [0xFF, 0xE0..=0xE2, hi, lo, ..] = jpeg[at.min(jpeg.len())..] {
        at += 2 + usize::from(u16::from_be_bytes([hi, lo]));
    }
    at.min(jpeg.len())
}

/// `jpeg` with these (marker, body) segments inserted at
/// [`insertion_point`].
fn with_segments(jpeg: &[u8], segments: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let at = insertion_point(jpeg);
    let mut out = jpeg[..at].to_vec();
    for (marker, body) in segments {
        out.extend_from_slice(&[0xFF, *marker]);
        out.extend_from_slice(&((body.len() + 2) as u16).to_be_bytes());
        out.extend_from_slice(body);
    }
    out.extend_from_slice(&jpeg[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ULTRA_HDR: &str = r#"<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="Adobe XMP Core 5.1.2">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about="" xmlns:hdrgm="http://ns.adobe.com/hdr-gain-map/1.0/"
    xmlns:exif="http://ns.adobe.com/exif/1.0/" exif:GPSLatitude="51,30.04N"
    hdrgm:Version="1.0" hdrgm:GainMapMin="0.0" hdrgm:Gamma="1"
    hdrgm:OffsetSDR="0.015625" hdrgm:OffsetHDR="0.015625"
    hdrgm:HDRCapacityMin="0" hdrgm:HDRCapacityMax="2.3" hdrgm:BaseRenditionIsHDR="False">
   <hdrgm:GainMapMax><rdf:Seq><rdf:li>2.1</rdf:li><rdf:li>2.3</rdf:li><rdf:li>2.2</rdf:li></rdf:Seq></hdrgm:GainMapMax>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>"#;

    #[test]
    fn an_ultra_hdr_gain_map_parses_with_defaults_and_per_channel_values() {
        let m = Metadata::parse(ULTRA_HDR.as_bytes()).unwrap();
        assert_eq!(m.values[1], vec![2.1, 2.3, 2.2]);
        assert_eq!(m.values[3], vec![0.015625]);
        assert_eq!(m.values[6], vec![2.3]);
        assert!(!m.base_rendition_is_hdr);
        // Written anew, it reads back the same, and only hdrgm survives.
        let again = m.xmp();
        assert_eq!(Metadata::parse(again.as_bytes()).unwrap(), m);
        assert!(!again.contains("GPS"), "{again}");
    }

    #[test]
    fn metadata_that_is_missing_or_inconsistent_is_not_a_gain_map() {
        let with = |from: &str, to: &str| ULTRA_HDR.replace(from, to);
        for (xmp, why) in [
            (with("hdrgm:Version=\"1.0\"", ""), "no hdrgm:Version"),
            (with("\"1.0\"", "\"2.0\""), "version"),
            (
                with("hdrgm:HDRCapacityMax=\"2.3\"", ""),
                "HDRCapacityMax is missing",
            ),
            (with("hdrgm:Gamma=\"1\"", "hdrgm:Gamma=\"0\""), "Gamma"),
            (with("hdrgm:Gamma=\"1\"", "hdrgm:Gamma=\"NaN\""), "finite"),
            (
                with(
                    "<rdf:li>2.1</rdf:li>",
                    "<rdf:li>-9</rdf:li><rdf:li>1</rdf:li>",
                ),
                "4 values",
            ),
            (
                with("hdrgm:GainMapMin=\"0.0\"", "hdrgm:GainMapMin=\"3\""),
                "exceeds",
            ),
            (
                with("hdrgm:Gamma=\"1\"", "hdrgm:Gamma=\"1\" hdrgm:Gamma=\"2\""),
                "twice",
            ),
            (
                with("hdrgm:Gamma=\"1\"", "x:Gamma=\"1\" xmlns:x=\"other\""),
                "binds prefix",
            ),
            (
                format!("<!DOCTYPE x [<!ENTITY a \"1\">]>{ULTRA_HDR}"),
                "DTD",
            ),
            (with("hdrgm:Gamma=\"1\"", "hdrgm:Gamma=1"), "parse"),
        ] {
            let err = Metadata::parse(xmp.as_bytes()).unwrap_err();
            assert!(err.contains(why), "{why}: {err}");
        }
    }

    #[test]
    fn the_assembled_file_indexes_its_gain_map_where_it_lies() {
        let jpeg = |w, h| {
            let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 9]));
            let mut out = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
                .encode_image(&img)
                .unwrap();
            out
        };
        let (primary, map) = (jpeg(64, 48), jpeg(16, 12));
        let meta = Metadata::parse(ULTRA_HDR.as_bytes()).unwrap();
        let stored = assemble(&primary, &map, &meta);
        let s = crate::jpeg::parse(&stored).unwrap();
        let end = s.trailer.unwrap();
        assert_eq!(s.announced.mpf_images, vec![end..stored.len()]);
        let xmp = xmp_of(&stored, &s).unwrap();
        let text = String::from_utf8(xmp).unwrap();
        let len = stored.len() - end;
        assert!(text.contains(&format!("Item:Length=\"{len}\"")), "{text}");
        let gain_map = &stored[end..];
        let g = crate::jpeg::parse(gain_map).unwrap();
        assert_eq!(
            Metadata::parse(&xmp_of(gain_map, &g).unwrap()).unwrap(),
            meta
        );
        assert_eq!((g.width, g.height), (16, 12));
    }
}
