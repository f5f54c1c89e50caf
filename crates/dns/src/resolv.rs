//! `resolv.conf`, as far as the DNS proxy needs it: the upstream name servers and the search
//! domains. Pure parsing; reading the file is the caller's.

use std::net::{IpAddr, SocketAddr};

/// What `resolv.conf` says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvConf {
    pub nameservers: Vec<SocketAddr>,
    pub search: Vec<String>,
}

impl ResolvConf {
    /// Parses the text of a `resolv.conf`. Lines it does not know are ignored, as the C
    /// library ignores them; an unparsable `nameserver` is an error naming its line.
    pub fn parse(text: &str) -> Result<ResolvConf, String> {
        let mut out = ResolvConf::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.split(['#', ';']).next().unwrap_or_default();
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => {
                    let value = words.next().unwrap_or_default();
                    // A scoped IPv6 address (`fe80::1%eth0`) keeps only its address here.
                    let ip: IpAddr = value
                        .split('%')
                        .next()
                        .unwrap_or_default()
                        .parse()
                        .map_err(|_| {
                            format!("line {}: nameserver {value:?} is not an IP address", n + 1)
                        })?;
                    out.nameservers.push(SocketAddr::new(ip, 53));
                }
                // The last `search` or `domain` line wins, as in the C library.
                Some("search") => out.search = words.map(str::to_string).collect(),
                Some("domain") => out.search = words.take(1).map(str::to_string).collect(),
                _ => {}
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_and_search_domains_are_read() {
        let conf = ResolvConf::parse(
            "# generated\nnameserver 10.96.0.10\nnameserver fd00::10 # second\n\
             search sample.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n",
        )
        .unwrap();
        assert_eq!(
            conf.nameservers,
            vec![
                "10.96.0.10:53".parse::<SocketAddr>().unwrap(),
                "[fd00::10]:53".parse().unwrap()
            ]
        );
        assert_eq!(
            conf.search,
            [
                "sample.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local"
            ]
        );
    }

    #[test]
    fn a_bad_nameserver_names_its_line() {
        let err = ResolvConf::parse("search x\nnameserver dns.example\n").unwrap_err();
        assert_eq!(
            err,
            "line 2: nameserver \"dns.example\" is not an IP address"
        );
    }
}
