//! The capture rules of a pod with a sidecar — what Istio's init container installs, in one
//! place: TCP arriving for the pod goes to the sidecar's inbound port, TCP leaving it goes to
//! the outbound port, except the sidecar's own (marked) connections, loopback, and the ports
//! the proxy serves itself (health, metrics); DNS questions (UDP and TCP port 53) go to the
//! sidecar's DNS proxy, except its own forwarded ones. Pure: the `iptables` argument lists.

/// What the rules point at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture {
    pub outbound_port: u16,
    pub inbound_port: u16,
    /// `SO_MARK` of the proxy's own sockets (`strait proxy --mark`); Istio matches UID 1337.
    pub mark: u32,
    /// Inbound ports left alone (the proxy's health and Prometheus ports, ...).
    pub exclude_inbound: Vec<u16>,
    /// The DNS proxy's port (Istio's 15053); `None`: DNS is not captured.
    pub dns_port: Option<u16>,
}

impl Default for Capture {
    fn default() -> Self {
        Capture {
            outbound_port: 15001,
            inbound_port: 15006,
            mark: 1337,
            exclude_inbound: vec![15008, 15020, 15021, 15090],
            dns_port: Some(15053),
        }
    }
}

impl Capture {
    /// The `iptables` invocations (arguments after `iptables`), in order.
    pub fn rules(&self) -> Vec<Vec<String>> {
        let mut out: Vec<String> = vec![
            "-t nat -N ISTIO_INBOUND".into(),
            "-t nat -N ISTIO_IN_REDIRECT".into(),
            "-t nat -N ISTIO_OUTPUT".into(),
            "-t nat -N ISTIO_REDIRECT".into(),
            "-t nat -A PREROUTING -p tcp -j ISTIO_INBOUND".into(),
        ];
        for port in &self.exclude_inbound {
            out.push(format!(
                "-t nat -A ISTIO_INBOUND -p tcp --dport {port} -j RETURN"
            ));
        }
        out.extend([
            "-t nat -A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT".into(),
            format!(
                "-t nat -A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports {}",
                self.inbound_port
            ),
            "-t nat -A OUTPUT -p tcp -j ISTIO_OUTPUT".into(),
            format!(
                "-t nat -A ISTIO_OUTPUT -m mark --mark {} -j RETURN",
                self.mark
            ),
        ]);
        if let Some(dns) = self.dns_port {
            // DNS over TCP, to any resolver (also one on loopback); UDP below.
            out.push(format!(
                "-t nat -A ISTIO_OUTPUT -p tcp --dport 53 -j REDIRECT --to-ports {dns}"
            ));
        }
        out.extend([
            "-t nat -A ISTIO_OUTPUT -d 127.0.0.0/8 -j RETURN".into(),
            "-t nat -A ISTIO_OUTPUT -j ISTIO_REDIRECT".into(),
            format!(
                "-t nat -A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports {}",
                self.outbound_port
            ),
        ]);
        if let Some(dns) = self.dns_port {
            out.extend([
                format!(
                    "-t nat -A OUTPUT -p udp --dport 53 -m mark --mark {} -j RETURN",
                    self.mark
                ),
                format!("-t nat -A OUTPUT -p udp --dport 53 -j REDIRECT --to-ports {dns}"),
            ]);
        }
        out.iter()
            .map(|r| r.split(' ').map(str::to_string).collect())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rules as command lines, and the index of the first one containing `needle`.
    fn rules_and_finder(c: &Capture) -> (Vec<String>, impl Fn(&str) -> usize + use<>) {
        let rules: Vec<String> = c.rules().iter().map(|r| r.join(" ")).collect();
        let copy = rules.clone();
        let at = move |needle: &str| {
            copy.iter()
                .position(|r| r.contains(needle))
                .unwrap_or_else(|| panic!("no rule with {needle}: {copy:#?}"))
        };
        (rules, at)
    }

    #[test]
    fn inbound_and_outbound_are_redirected_except_the_proxys_own_traffic() {
        let (rules, at) = rules_and_finder(&Capture::default());
        assert!(at("--dport 15021 -j RETURN") < at("-j ISTIO_IN_REDIRECT"));
        assert!(at("--mark 1337 -j RETURN") < at("-A ISTIO_OUTPUT -j ISTIO_REDIRECT"));
        assert!(
            rules.contains(&"-t nat -A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001".into())
        );
        assert!(
            rules.contains(
                &"-t nat -A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006".into()
            )
        );
    }

    #[test]
    fn dns_goes_to_the_dns_proxy_except_its_own_questions() {
        let (_, at) = rules_and_finder(&Capture::default());
        assert!(
            at("-t nat -A OUTPUT -p udp --dport 53 -m mark --mark 1337 -j RETURN")
                < at("-t nat -A OUTPUT -p udp --dport 53 -j REDIRECT --to-ports 15053")
        );
        // TCP DNS: after the proxy's own traffic leaves, before loopback is let through.
        let tcp = at("-t nat -A ISTIO_OUTPUT -p tcp --dport 53 -j REDIRECT --to-ports 15053");
        assert!(at("-t nat -A ISTIO_OUTPUT -m mark --mark 1337 -j RETURN") < tcp);
        assert!(tcp < at("-t nat -A ISTIO_OUTPUT -d 127.0.0.0/8 -j RETURN"));
        let off = Capture {
            dns_port: None,
            ..Capture::default()
        };
        assert!(off.rules().iter().all(|r| !r.join(" ").contains("53 ")));
    }
}
