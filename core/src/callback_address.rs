//! Where a completion webhook may go. A tenant names its callback URL, and
//! the workers and the operator POST to it from inside the installation:
//! without a rule, a tenant could make them call loopback services, the
//! cloud's metadata endpoint (169.254.169.254), or anything cluster-internal,
//! and read the outcome back. So every address a callback resolves to is
//! classified here, at delivery time, and internal ones are refused unless
//! the configuration's allow-list names them (`webhook_allowed_networks`).
//!
//! Pure: an address in, the range it falls in out. IPv4 addresses inside
//! IPv6 ones (mapped, NAT64, 6to4) are judged as the IPv4 address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The internal or special range `ip` falls in, named for the log and the
/// delivery error; `None` for an ordinary public address.
pub fn internal_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_range(v4),
        IpAddr::V6(v6) => v6_range(v6),
    }
}

fn v4_range(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, _, _) => "this network (0.0.0.0/8)",
        (10, _, _) => "private (10.0.0.0/8)",
        (100, 64..=127, _) => "shared address space (100.64.0.0/10)",
        (127, _, _) => "loopback (127.0.0.0/8)",
        (169, 254, _) => "link-local (169.254.0.0/16, cloud metadata)",
        (172, 16..=31, _) => "private (172.16.0.0/12)",
        (192, 0, 0) => "IETF protocol assignments (192.0.0.0/24)",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (192, 88, 99) => "6to4 relay anycast (192.88.99.0/24)",
        (192, 168, _) => "private (192.168.0.0/16)",
        (198, 18..=19, _) => "benchmarking (198.18.0.0/15)",
        (224..=239, _, _) => "multicast (224.0.0.0/4)",
        (240..=255, _, _) => "reserved or broadcast (240.0.0.0/4)",
        _ => return None,
    })
}

fn v6_range(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    // IPv4 carried in IPv6: judged as the IPv4 address.
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_range(v4);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return v4_range(embedded(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        return v4_range(embedded(s[1], s[2]));
    }
    Some(match s {
        [0, 0, 0, 0, 0, 0, 0, 0] => "unspecified (::)",
        [0, 0, 0, 0, 0, 0, 0, 1] => "loopback (::1)",
        // IPv4-compatible (deprecated), ::a.b.c.d
        [0, 0, 0, 0, 0, 0, _, _] => "IPv4-compatible (::/96)",
        [0x64, 0xff9b, 1, ..] => "local-use NAT64 (64:ff9b:1::/48)",
        [0x100, 0, 0, 0, ..] => "discard-only (100::/64)",
        [0x2001, 0xdb8, ..] => "documentation (2001:db8::/32)",
        [x, ..] if x & 0xfe00 == 0xfc00 => "unique local (fc00::/7)",
        [x, ..] if x & 0xffc0 == 0xfe80 => "link-local (fe80::/10)",
        [x, ..] if x & 0xffc0 == 0xfec0 => "site-local (fec0::/10)",
        [x, ..] if x & 0xff00 == 0xff00 => "multicast (ff00::/8)",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_internal_range_is_refused_and_public_addresses_pass() {
        // (address, refused)
        let cases = [
            // IPv4: each range, at its edges.
            ("0.0.0.0", true),
            ("0.255.255.255", true),
            ("10.0.0.1", true),
            ("10.255.255.255", true),
            ("100.63.255.255", false),
            ("100.64.0.0", true),
            ("100.127.255.255", true),
            ("100.128.0.0", false),
            ("127.0.0.1", true),
            ("127.255.255.254", true),
            ("169.254.169.254", true), // cloud metadata
            ("169.253.255.255", false),
            ("172.15.255.255", false),
            ("172.16.0.0", true),
            ("172.31.255.255", true),
            ("172.32.0.0", false),
            ("192.0.0.8", true),
            ("192.0.2.1", true),
            ("192.88.99.1", true),
            ("192.167.255.255", false),
            ("192.168.0.1", true),
            ("192.169.0.0", false),
            ("198.18.0.1", true),
            ("198.19.255.255", true),
            ("198.20.0.0", false),
            ("198.51.100.7", true),
            ("203.0.113.9", true),
            ("224.0.0.1", true),
            ("239.255.255.250", true),
            ("240.0.0.1", true),
            ("255.255.255.255", true),
            ("1.1.1.1", false),
            ("8.8.8.8", false),
            ("93.184.215.14", false),
            ("223.255.255.255", false),
            // IPv6.
            ("::", true),
            ("::1", true),
            ("::7f00:1", true), // IPv4-compatible
            ("::ffff:127.0.0.1", true),
            ("::ffff:169.254.169.254", true),
            ("::ffff:10.1.2.3", true),
            ("::ffff:8.8.8.8", false),
            ("64:ff9b::7f00:1", true),   // NAT64 of 127.0.0.1
            ("64:ff9b::808:808", false), // NAT64 of 8.8.8.8
            ("64:ff9b:1::1", true),
            ("2002:7f00:1::", true),    // 6to4 of 127.0.0.1
            ("2002:a9fe:a9fe::", true), // 6to4 of 169.254.169.254
            ("2002:808:808::", false),
            ("100::1", true),
            ("2001:db8::1", true),
            ("fc00::1", true),
            ("fd12:3456::1", true),
            ("fe80::1", true),
            ("febf::1", true),
            ("fec0::1", true),
            ("ff02::1", true),
            ("2606:4700:4700::1111", false),
            ("2001:4860:4860::8888", false),
        ];
        for (addr, refused) in cases {
            let ip: IpAddr = addr.parse().unwrap();
            assert_eq!(
                internal_range(ip).is_some(),
                refused,
                "{addr}: {:?}",
                internal_range(ip)
            );
        }
        assert_eq!(
            internal_range("169.254.169.254".parse().unwrap()),
            Some("link-local (169.254.0.0/16, cloud metadata)")
        );
    }
}
