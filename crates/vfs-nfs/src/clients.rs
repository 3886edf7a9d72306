//! Which client addresses an export answers: a list of networks in CIDR notation.
//!
//! Invariant: an address is allowed exactly when some network of a non-empty list
//! contains it (an empty list allows every address); IPv4 clients reaching an IPv6
//! socket (`::ffff:a.b.c.d`) are matched as the IPv4 addresses they are. Parsing takes
//! untrusted text (a command line, a configuration file) and answers a clear error for
//! anything that is not `ADDRESS` or `ADDRESS/PREFIX`; it never panics.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// A network of client addresses, written `10.0.0.0/8`, `192.168.1.7/32`, `::1/128` or
/// a bare address (all of its bits).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ClientNet {
    addr: IpAddr,
    prefix: u8,
}

/// Why a string is not a [`ClientNet`].
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct BadClientNet(String);

impl fmt::Display for BadClientNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadClientNet {}

impl ClientNet {
    /// The network of `addr`'s first `prefix` bits (`prefix` at most 32 for IPv4, 128 for
    /// IPv6).
    pub fn new(addr: IpAddr, prefix: u8) -> Result<ClientNet, BadClientNet> {
        // `::ffff:a.b.c.d/P` with P >= 96 is the IPv4 network `a.b.c.d/(P - 96)`.
        let (addr, prefix) = match addr.to_canonical() {
            IpAddr::V4(v4) if addr.is_ipv6() && prefix >= 96 => (IpAddr::V4(v4), prefix - 96),
            IpAddr::V4(_) if addr.is_ipv6() => (addr, prefix),
            canonical => (canonical, prefix),
        };
        let max = max_prefix(addr);
        if prefix > max {
            return Err(BadClientNet(format!("prefix /{prefix} is longer than {max} bits")));
        }
        Ok(ClientNet { addr, prefix })
    }

    /// Whether `ip` is in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => same_prefix(&net.octets(), &ip.octets(), self.prefix),
            (IpAddr::V6(net), IpAddr::V6(ip)) => same_prefix(&net.octets(), &ip.octets(), self.prefix),
            _ => false,
        }
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

/// Whether the first `bits` bits of `a` and `b` are equal.
fn same_prefix(a: &[u8], b: &[u8], bits: u8) -> bool {
    let bits = usize::from(bits);
    let whole = bits / 8;
    if a.get(..whole) != b.get(..whole) {
        return false;
    }
    let rest = bits % 8;
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    match (a.get(whole), b.get(whole)) {
        (Some(x), Some(y)) => x & mask == y & mask,
        _ => false,
    }
}

impl FromStr for ClientNet {
    type Err = BadClientNet;

    fn from_str(s: &str) -> Result<ClientNet, BadClientNet> {
        let bad = |why: &str| {
            BadClientNet(format!(
                "{s:?} is not a client network ({why}); write e.g. 10.0.0.0/8, 192.168.1.7 or ::1/128"
            ))
        };
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad("not an IP address"))?;
        let prefix = match prefix {
            None => max_prefix(addr),
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().map_err(|_| bad("the prefix is not a number of bits"))?
            }
            Some(_) => return Err(bad("the prefix is not a number of bits")),
        };
        ClientNet::new(addr, prefix).map_err(|e| bad(&e.0))
    }
}

impl fmt::Display for ClientNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Whether `ip` may use an export whose allowlist is `nets` (empty: everyone).
pub fn allowed(nets: &[ClientNet], ip: IpAddr) -> bool {
    nets.is_empty() || nets.iter().any(|n| n.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> ClientNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks_contain_what_their_prefix_says() {
        assert!(net("127.0.0.2/32").contains(ip("127.0.0.2")));
        assert!(!net("127.0.0.2/32").contains(ip("127.0.0.1")));
        assert!(net("10.0.0.0/8").contains(ip("10.255.1.2")));
        assert!(!net("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(net("192.168.4.0/22").contains(ip("192.168.7.255")));
        assert!(!net("192.168.4.0/22").contains(ip("192.168.8.0")));
        assert!(net("0.0.0.0/0").contains(ip("8.8.8.8")));
        assert!(net("::1").contains(ip("::1")));
        assert!(!net("::1").contains(ip("::2")));
        assert!(net("fd00::/8").contains(ip("fdab::1")));
        // An IPv4 client on an IPv6 socket is matched as IPv4, both ways round.
        assert!(net("127.0.0.1").contains(ip("::ffff:127.0.0.1")));
        assert!(net("::ffff:10.0.0.0/104").contains(ip("10.1.2.3")));
        assert!(
            !net("::/0").contains(ip("10.1.2.3")),
            "an IPv6 network holds no IPv4 client"
        );
        assert_eq!(net("10.1.2.3").to_string(), "10.1.2.3/32");
    }

    #[test]
    fn bad_networks_are_clear_errors() {
        for s in [
            "",
            "10.0.0",
            "10.0.0.0/33",
            "::1/129",
            "10.0.0.0/",
            "10.0.0.0/-1",
            "10.0.0.0/8/8",
            "host",
            "10.0.0.0/0008",
        ] {
            let e = s.parse::<ClientNet>().unwrap_err().to_string();
            assert!(e.contains("is not a client network"), "{s:?}: {e}");
        }
    }

    #[test]
    fn an_empty_list_allows_everyone() {
        assert!(allowed(&[], ip("203.0.113.9")));
        let list = [net("127.0.0.2"), net("10.0.0.0/8")];
        assert!(allowed(&list, ip("10.9.9.9")));
        assert!(!allowed(&list, ip("127.0.0.1")));
    }

    proptest::proptest! {
        #[test]
        fn parsing_any_text_never_panics(s in "\\PC{0,40}") {
            let _ = s.parse::<ClientNet>();
        }
    }
}
