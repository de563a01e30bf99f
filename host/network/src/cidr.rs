//! The node's pod CIDR: its gateway and the addresses pods get.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 network in CIDR notation with room for a gateway and at least one
/// pod (prefix length 1..=30).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PodCidr {
    network: u32,
    prefix_len: u8,
}

impl PodCidr {
    pub(crate) fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    fn mask(&self) -> u32 {
        u32::MAX << (32 - u32::from(self.prefix_len))
    }

    pub(crate) fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.network)
    }

    pub(crate) fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.network | !self.mask())
    }

    /// The first host address, given to the bridge.
    pub(crate) fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.network + 1)
    }

    /// First and last pod address (inclusive): all hosts but the gateway.
    fn pod_range(&self) -> (u32, u32) {
        (self.network + 2, (self.network | !self.mask()) - 1)
    }

    /// How many pods fit.
    pub(crate) fn capacity(&self) -> u32 {
        let (first, last) = self.pod_range();
        last - first + 1
    }

    /// Whether this network and `other/prefix_len` share any address.
    pub(crate) fn overlaps(&self, other: Ipv4Addr, prefix_len: u8) -> bool {
        let shorter = self.prefix_len.min(prefix_len);
        if shorter == 0 {
            return true;
        }
        let mask = u32::MAX << (32 - u32::from(shorter));
        self.network & mask == u32::from(other) & mask
    }

    /// The first pod address after `after` (wrapping around) for which
    /// `taken` is false: allocating round-robin keeps a just-released address
    /// out of use as long as possible, so stale ARP entries and connections
    /// for a deleted pod do not reach a new one.
    pub(crate) fn next_free(
        &self,
        after: Option<Ipv4Addr>,
        taken: impl Fn(Ipv4Addr) -> bool,
    ) -> Option<Ipv4Addr> {
        let (first, last) = self.pod_range();
        let start = match after.map(u32::from) {
            Some(a) if a >= first && a < last => a + 1,
            _ => first,
        };
        (start..=last)
            .chain(first..start)
            .map(Ipv4Addr::from)
            .find(|ip| !taken(*ip))
    }
}

impl FromStr for PodCidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, len) = s
            .split_once('/')
            .ok_or_else(|| format!("pod CIDR {s:?} is not of the form a.b.c.d/len"))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("pod CIDR {s:?} does not start with an IPv4 address"))?;
        let prefix_len: u8 = len
            .parse()
            .map_err(|_| format!("pod CIDR {s:?} has no numeric prefix length"))?;
        if !(1..=30).contains(&prefix_len) {
            return Err(format!(
                "pod CIDR {s:?} must have a prefix length from 1 to 30 (room for a gateway and a pod)"
            ));
        }
        let cidr = PodCidr {
            network: u32::from(addr),
            prefix_len,
        };
        let network = cidr.network & cidr.mask();
        if network != cidr.network {
            return Err(format!(
                "pod CIDR {s:?} has host bits set; did you mean {}/{prefix_len}?",
                Ipv4Addr::from(network)
            ));
        }
        Ok(cidr)
    }
}

impl fmt::Display for PodCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network(), self.prefix_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_derives_gateway_and_range() {
        let c: PodCidr = "10.88.0.0/24".parse().unwrap();
        assert_eq!(c.gateway(), ip("10.88.0.1"));
        assert_eq!(c.broadcast(), ip("10.88.0.255"));
        assert_eq!(c.capacity(), 253);
        assert_eq!(
            c.pod_range(),
            (u32::from(ip("10.88.0.2")), u32::from(ip("10.88.0.254")))
        );
        assert_eq!(c.to_string(), "10.88.0.0/24");

        let tiny: PodCidr = "10.9.9.4/30".parse().unwrap();
        assert_eq!(tiny.capacity(), 1);
        assert_eq!(tiny.gateway(), ip("10.9.9.5"));
    }

    #[test]
    fn rejects_bad_cidrs_with_a_reason() {
        for bad in [
            "10.0.0.0",
            "x/24",
            "10.0.0.0/31",
            "10.0.0.0/0",
            "10.0.0.1/24",
        ] {
            let err = bad.parse::<PodCidr>().unwrap_err();
            assert!(err.contains(bad), "{err}");
        }
        assert!("10.0.0.1/24"
            .parse::<PodCidr>()
            .unwrap_err()
            .contains("10.0.0.0/24"));
    }

    #[test]
    fn allocates_round_robin_and_wraps() {
        let c: PodCidr = "10.1.0.0/29".parse().unwrap(); // pods .2 ..= .6
        let taken = |x: Ipv4Addr| x == ip("10.1.0.3");
        assert_eq!(c.next_free(None, taken), Some(ip("10.1.0.2")));
        assert_eq!(
            c.next_free(Some(ip("10.1.0.2")), taken),
            Some(ip("10.1.0.4"))
        );
        assert_eq!(
            c.next_free(Some(ip("10.1.0.6")), taken),
            Some(ip("10.1.0.2"))
        );
        assert_eq!(c.next_free(Some(ip("10.1.0.6")), |_| true), None);
    }

    #[test]
    fn overlap() {
        let c: PodCidr = "10.88.0.0/24".parse().unwrap();
        assert!(c.overlaps(ip("10.88.0.128"), 25));
        assert!(c.overlaps(ip("10.0.0.0"), 8));
        assert!(!c.overlaps(ip("10.88.1.0"), 24));
    }
}
