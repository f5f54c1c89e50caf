//! The table the DNS proxy answers from, built from the control plane's name table for one
//! proxy: every name a host answers to (for a Kubernetes Service in the proxy's cluster domain
//! `name.ns`, `name.ns.svc` and, from its own namespace, `name`), plus each of those names with
//! the first search domain appended — what a resolver asks first — as an alias of the name, so
//! that `api.example.com` asked as `api.example.com.sample.svc.cluster.local` takes one round
//! trip instead of one per search domain. Names are lower case and end with a dot. Pure.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use strait_xds::dns::{NameTable, REGISTRY_KUBERNETES};

/// Where the proxy runs, which decides the short names it answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LookupContext {
    /// The proxy's namespace.
    pub namespace: String,
    /// The cluster's domain suffix (`cluster.local`).
    pub domain_suffix: String,
    /// `resolv.conf`'s search domains, in order.
    pub search: Vec<String>,
    /// A zone answered with authority: its unknown names are NXDOMAIN rather than asked
    /// upstream (the control plane's cluster DNS, for `cluster.local`). Sidecars have none.
    pub zone: Option<String>,
}

/// What a name holds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Addresses {
        v4: Vec<Ipv4Addr>,
        v6: Vec<Ipv6Addr>,
    },
    /// Another name of the table (search-domain expansion).
    Alias(String),
}

/// A question the table can answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Question {
    A,
    Aaaa,
}

/// The table's answer: an optional alias step, then the addresses (possibly none: the name is
/// known but has no address of that family, which is NOERROR, not NXDOMAIN).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    /// (asked name, the name it stands for).
    pub alias: Option<(String, String)>,
    /// The name the addresses are for (the asked one, or the alias target).
    pub name: String,
    pub addresses: Vec<IpAddr>,
}

/// Names and what they answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lookup {
    names: HashMap<String, Entry>,
    /// `.zone.` of [`LookupContext::zone`].
    zone: Option<String>,
}

/// `name` in the table's form: lower case, ending with a dot.
pub fn canonical(name: &str) -> String {
    let mut n = name.to_ascii_lowercase();
    if !n.ends_with('.') {
        n.push('.');
    }
    n
}

impl Lookup {
    pub fn build(table: &NameTable, ctx: &LookupContext) -> Lookup {
        let mut lookup = Lookup {
            names: HashMap::new(),
            zone: ctx.zone.as_ref().map(|z| format!(".{}", canonical(z))),
        };
        let cluster_domain = format!(".svc.{}", ctx.domain_suffix.trim_end_matches('.'));
        let first_search = ctx.search.first().map(|s| canonical(s));
        for (host, info) in &table.hosts {
            let mut v4 = Vec::new();
            let mut v6 = Vec::new();
            for ip in info.ips.iter().filter_map(|ip| ip.parse::<IpAddr>().ok()) {
                match ip {
                    IpAddr::V4(a) => v4.push(a),
                    IpAddr::V6(a) => v6.push(a),
                }
            }
            if v4.is_empty() && v6.is_empty() {
                continue;
            }
            let mut names = vec![canonical(host)];
            let kubernetes = info.registry == REGISTRY_KUBERNETES && !info.short_name.is_empty();
            // Short forms only within the proxy's own cluster domain: another domain's
            // `name.ns` could mean something else.
            if kubernetes && host.ends_with(&cluster_domain) {
                let (name, ns) = (&info.short_name, &info.namespace);
                names.push(canonical(&format!("{name}.{ns}")));
                names.push(canonical(&format!("{name}.{ns}.svc")));
                if *ns == ctx.namespace {
                    names.push(canonical(name));
                }
            }
            names.extend(info.alt_hosts.iter().map(|h| canonical(h)));
            for name in &names {
                lookup.names.insert(
                    name.clone(),
                    Entry::Addresses {
                        v4: v4.clone(),
                        v6: v6.clone(),
                    },
                );
            }
            if let Some(search) = &first_search {
                for name in &names {
                    let expanded = format!("{name}{search}");
                    lookup
                        .names
                        .entry(expanded)
                        .or_insert_with(|| Entry::Alias(name.clone()));
                }
            }
        }
        lookup
    }

    /// Whether `name` lies in the zone answered with authority.
    pub fn in_zone(&self, name: &str) -> bool {
        let name = canonical(name);
        self.zone
            .as_ref()
            .is_some_and(|z| name.ends_with(z.as_str()) || name == z[1..])
    }

    /// The answer for `name`, or `None` when the name is not the mesh's (ask upstream).
    /// Wildcard hosts (`*.example.com`) answer every name below them.
    pub fn resolve(&self, name: &str, question: Question) -> Option<Answer> {
        let asked = canonical(name);
        let (mut found, mut entry) = (asked.clone(), self.names.get(&asked));
        if entry.is_none() {
            let mut rest = asked.as_str();
            while let Some((_, parent)) = rest.split_once('.') {
                if parent.is_empty() {
                    break;
                }
                if let Some(e) = self.names.get(&format!("*.{parent}")) {
                    entry = Some(e);
                    found = asked.clone();
                    break;
                }
                rest = parent;
            }
        }
        let mut answer = Answer {
            name: found.clone(),
            ..Answer::default()
        };
        let mut entry = entry?;
        if let Entry::Alias(target) = entry {
            answer.alias = Some((found, target.clone()));
            answer.name = target.clone();
            entry = self.names.get(target)?;
        }
        if let Entry::Addresses { v4, v6 } = entry {
            answer.addresses = match question {
                Question::A => v4.iter().copied().map(IpAddr::V4).collect(),
                Question::Aaaa => v6.iter().copied().map(IpAddr::V6).collect(),
            };
        }
        Some(answer)
    }
}

#[cfg(test)]
mod tests {
    use strait_xds::dns::{NameInfo, REGISTRY_EXTERNAL};

    use super::*;

    fn table() -> NameTable {
        let mut t = NameTable::default();
        let kube = |ips: &[&str], name: &str, ns: &str| NameInfo {
            ips: ips.iter().map(|s| s.to_string()).collect(),
            registry: REGISTRY_KUBERNETES.into(),
            short_name: name.into(),
            namespace: ns.into(),
            alt_hosts: vec![],
        };
        let external = |ips: &[&str]| NameInfo {
            ips: ips.iter().map(|s| s.to_string()).collect(),
            registry: REGISTRY_EXTERNAL.into(),
            ..NameInfo::default()
        };
        t.hosts.insert(
            "helloworld.sample.svc.cluster.local".into(),
            kube(&["10.96.0.20"], "helloworld", "sample"),
        );
        t.hosts.insert(
            "reviews.other.svc.cluster.local".into(),
            kube(&["10.96.0.30", "fd00::30"], "reviews", "other"),
        );
        // A StatefulSet pod's own name under its headless service.
        t.hosts.insert(
            "mysql-0.mysql.sample.svc.cluster.local".into(),
            kube(&["10.1.0.7"], "mysql-0.mysql", "sample"),
        );
        t.hosts
            .insert("api.example.com".into(), external(&["240.240.50.233"]));
        t.hosts
            .insert("*.wild.example.com".into(), external(&["192.0.2.9"]));
        t
    }

    fn ctx() -> LookupContext {
        LookupContext {
            namespace: "sample".into(),
            domain_suffix: "cluster.local".into(),
            search: vec![
                "sample.svc.cluster.local".into(),
                "svc.cluster.local".into(),
                "cluster.local".into(),
            ],
            zone: None,
        }
    }

    fn ips(l: &Lookup, name: &str, q: Question) -> Option<Vec<String>> {
        l.resolve(name, q)
            .map(|a| a.addresses.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn a_pods_own_name_answers_in_its_short_forms() {
        let l = Lookup::build(&table(), &ctx());
        for name in [
            "mysql-0.mysql.sample.svc.cluster.local",
            "mysql-0.mysql.sample.svc",
            "mysql-0.mysql.sample",
            "mysql-0.mysql",
        ] {
            assert_eq!(
                ips(&l, name, Question::A),
                Some(vec!["10.1.0.7".into()]),
                "{name}"
            );
        }
    }

    #[test]
    fn kubernetes_names_answer_in_every_short_form_from_their_namespace() {
        let l = Lookup::build(&table(), &ctx());
        for name in [
            "helloworld.sample.svc.cluster.local",
            "HelloWorld.sample.svc.cluster.local.",
            "helloworld.sample.svc",
            "helloworld.sample",
            "helloworld",
        ] {
            assert_eq!(
                ips(&l, name, Question::A),
                Some(vec!["10.96.0.20".into()]),
                "{name}"
            );
        }
        // Another namespace's service has no bare short name here.
        assert_eq!(
            ips(&l, "reviews.other", Question::A),
            Some(vec!["10.96.0.30".into()])
        );
        assert_eq!(ips(&l, "reviews", Question::A), None);
    }

    #[test]
    fn a_known_name_without_that_family_is_known_and_empty() {
        let l = Lookup::build(&table(), &ctx());
        assert_eq!(
            ips(&l, "helloworld.sample.svc.cluster.local", Question::Aaaa),
            Some(vec![])
        );
        assert_eq!(
            ips(&l, "reviews.other.svc.cluster.local", Question::Aaaa),
            Some(vec!["fd00::30".into()])
        );
    }

    #[test]
    fn a_name_with_the_first_search_domain_appended_is_an_alias() {
        let l = Lookup::build(&table(), &ctx());
        let a = l
            .resolve("api.example.com.sample.svc.cluster.local", Question::A)
            .unwrap();
        assert_eq!(
            a.alias,
            Some((
                "api.example.com.sample.svc.cluster.local.".into(),
                "api.example.com.".into()
            ))
        );
        assert_eq!(
            a.addresses,
            vec!["240.240.50.233".parse::<IpAddr>().unwrap()]
        );
        // The real name of a same-namespace service is not an alias of its short name.
        let a = l
            .resolve("helloworld.sample.svc.cluster.local", Question::A)
            .unwrap();
        assert_eq!(a.alias, None);
    }

    #[test]
    fn wildcards_answer_names_below_them_and_unknown_names_go_upstream() {
        let l = Lookup::build(&table(), &ctx());
        assert_eq!(
            ips(&l, "a.b.wild.example.com", Question::A),
            Some(vec!["192.0.2.9".into()])
        );
        assert_eq!(ips(&l, "wild.example.com", Question::A), None);
        assert_eq!(ips(&l, "www.example.org", Question::A), None);
        assert_eq!(ips(&l, "example.com", Question::A), None);
        assert!(!l.in_zone("nothing.sample.svc.cluster.local"));
        let zoned = Lookup::build(
            &table(),
            &LookupContext {
                zone: Some("cluster.local".into()),
                ..ctx()
            },
        );
        assert!(zoned.in_zone("nothing.sample.svc.cluster.local."));
        assert!(zoned.in_zone("cluster.local"));
        assert!(!zoned.in_zone("example.com"));
        assert!(!zoned.in_zone("notcluster.local"));
    }
}
