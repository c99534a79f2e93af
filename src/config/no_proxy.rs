//! `NO_PROXY` lists, read as curl reads them: comma-separated entries, each a host name (which
//! also covers its subdomains; a leading dot changes nothing), `*` for every host, an IP address
//! or a CIDR range (which match IP-literal targets only: nothing is resolved). Ports in entries
//! are ignored, as by curl. Pure: the list is parsed once when the config is validated.
//!
//! Why not hyper-util's `client::proxy::matcher` (what reqwest uses): its `NoProxy` is private
//! (reachable only through a whole `Matcher` and a `Uri`), it accepts any entry without an error
//! (so a typo in `no_proxy` could not be reported with its line and key), and it differs from
//! curl's rules where our tests pin them: `*` does not cover IP addresses, ports in entries and
//! trailing dots are not dropped, `[v6]/n` and `*.domain` are not read. Matching is about 30
//! lines here; the parser, which validation needs anyway, is the rest.

use std::net::IpAddr;

/// A parsed `NO_PROXY` list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoProxy {
    entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// `*`: every host goes direct.
    All,
    /// A name, lower case, without leading or trailing dots.
    Name(String),
    /// An address and the number of leading bits that must match.
    Net(IpAddr, u8),
}

impl NoProxy {
    /// Parses the entries of one or more lists (config `no_proxy` items, the `NO_PROXY` value);
    /// empty entries are skipped. An entry that is neither a name nor an address is an error.
    pub fn parse<'a>(lists: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let entries = split(lists)
            .map(parse_entry)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(NoProxy { entries })
    }

    /// As [`NoProxy::parse`], but skipping the entries that are neither a name nor an address
    /// (`<local>`, `10.*`), as curl does; they are returned for a warning.
    pub fn parse_lenient<'a>(lists: impl IntoIterator<Item = &'a str>) -> (Self, Vec<String>) {
        let mut entries = Vec::new();
        let mut skipped = Vec::new();
        for entry in split(lists) {
            match parse_entry(entry) {
                Ok(e) => entries.push(e),
                Err(_) => skipped.push(entry.chars().take(100).collect()),
            }
        }
        (NoProxy { entries }, skipped)
    }

    /// Whether `host` (a name or an IP literal, brackets allowed) is to be reached directly.
    pub fn matches(&self, host: &str) -> bool {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let ip = host.parse::<IpAddr>().ok();
        self.entries.iter().any(|entry| match (entry, ip) {
            (Entry::All, _) => true,
            (Entry::Net(net, bits), Some(ip)) => in_network(ip, *net, *bits),
            (Entry::Name(name), None) => {
                host == *name
                    || host
                        .strip_suffix(name.as_str())
                        .is_some_and(|rest| rest.ends_with('.'))
            }
            _ => false,
        })
    }

    /// Whether the list has no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The entries of comma-separated lists, trimmed, empty ones left out.
fn split<'a>(lists: impl IntoIterator<Item = &'a str>) -> impl Iterator<Item = &'a str> {
    lists
        .into_iter()
        .flat_map(|l| l.split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty())
}

fn parse_entry(entry: &str) -> Result<Entry, String> {
    if entry == "*" {
        return Ok(Entry::All);
    }
    let bad = || format!("`{entry}` is not a host name, an IP address or a CIDR range");
    // `[v6]`, `[v6]:port`, `[v6]/bits`.
    if let Some(rest) = entry.strip_prefix('[') {
        let (addr, after) = rest.split_once(']').ok_or_else(bad)?;
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        return match after.strip_prefix('/') {
            Some(bits) => net(addr, bits).ok_or_else(bad),
            None if after.is_empty() || after.starts_with(':') => Ok(host_net(addr)),
            None => Err(bad()),
        };
    }
    if let Some((addr, bits)) = entry.split_once('/') {
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        return net(addr, bits).ok_or_else(bad);
    }
    if let Ok(addr) = entry.parse::<IpAddr>() {
        return Ok(host_net(addr));
    }
    // A name or an IPv4 address, with an optional port that is ignored.
    let host = match entry.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => entry,
    };
    if let Ok(addr) = host.parse::<IpAddr>() {
        return Ok(host_net(addr));
    }
    let name = host
        .trim_start_matches("*.")
        .trim_start_matches('.')
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let plausible = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    if plausible {
        Ok(Entry::Name(name))
    } else {
        Err(bad())
    }
}

fn host_net(addr: IpAddr) -> Entry {
    let bits = if addr.is_ipv4() { 32 } else { 128 };
    Entry::Net(addr, bits)
}

fn net(addr: IpAddr, bits: &str) -> Option<Entry> {
    let bits: u8 = bits.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (bits <= max).then_some(Entry::Net(addr, bits))
}

fn in_network(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    let (ip, net, width) = match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u32::from(a) as u128, u32::from(b) as u128, 32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
        _ => return false,
    };
    if bits == 0 {
        return true;
    }
    let shift = width - u32::from(bits);
    ip >> shift == net >> shift
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(text: &str) -> NoProxy {
        NoProxy::parse([text]).unwrap()
    }

    #[test]
    fn names_cover_their_subdomains_and_nothing_else() {
        let l = list("corp.example, .internal.test");
        assert!(l.matches("corp.example"));
        assert!(l.matches("API.Corp.Example."));
        assert!(!l.matches("notcorp.example"));
        assert!(!l.matches("corp.example.com"));
        assert!(l.matches("internal.test"));
        assert!(l.matches("a.b.internal.test"));
        assert!(!l.matches("xinternal.test"));
    }

    #[test]
    fn star_alone_matches_everything() {
        assert!(list("*").matches("api.azure-costs.com"));
        assert!(list("a.test, *").matches("10.1.2.3"));
        assert!(list("*.corp.example").matches("api.corp.example"));
    }

    #[test]
    fn addresses_and_ranges_match_ip_literals_only() {
        let l = list("10.0.0.0/8, 192.168.1.7, ::1, [fd00::]/8, 172.16.0.1:3128");
        assert!(l.matches("10.200.3.4"));
        assert!(!l.matches("11.0.0.1"));
        assert!(l.matches("192.168.1.7"));
        assert!(!l.matches("192.168.1.8"));
        assert!(l.matches("[::1]"));
        assert!(l.matches("fd12::5"));
        assert!(!l.matches("fe80::1"));
        assert!(l.matches("172.16.0.1"));
        // Names are not resolved: a name never matches an address entry.
        assert!(!l.matches("ten.example"));
        assert!(list("0.0.0.0/0").matches("8.8.8.8"));
    }

    #[test]
    fn ports_in_entries_are_ignored() {
        assert!(list("proxy.corp:8443").matches("proxy.corp"));
        assert!(list("[::1]:80").matches("::1"));
    }

    #[test]
    fn nonsense_is_an_error_and_blanks_are_skipped() {
        assert!(NoProxy::parse(["10.0.0.0/33"]).is_err());
        assert!(NoProxy::parse(["a b"]).is_err());
        assert!(NoProxy::parse(["[::1"]).is_err());
        assert!(NoProxy::parse(["http://x.test/"]).is_err());
        let (lenient, skipped) = NoProxy::parse_lenient(["<local>, corp.example, 10.*"]);
        assert!(lenient.matches("a.corp.example"));
        assert_eq!(skipped, ["<local>", "10.*"]);
        let empty = NoProxy::parse([" , ,", ""]).unwrap();
        assert!(empty.is_empty());
        assert!(!empty.matches("a.test"));
    }
}
