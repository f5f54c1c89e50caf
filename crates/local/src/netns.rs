//! Network namespaces, links and per-namespace files (the edge): thin wrappers over `ip` and
//! `iptables`, each failure naming the command and what it said, and a way to run a closure
//! inside a namespace (on a thread of its own, so the caller's namespace never changes).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};

/// Runs `program args...`, failing with its standard error.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program}: is it installed?"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs `args` inside namespace `ns`.
pub fn run_in(ns: &str, args: &[&str]) -> anyhow::Result<()> {
    let mut all = vec!["netns", "exec", ns];
    all.extend_from_slice(args);
    run("ip", &all)
}

/// The interface by which a network's router and its gateways meet the WAN.
pub const WAN_LINK: &str = "wan";

/// Cuts a network off the WAN (`cut` true) or joins it again: its router (`router_ns`) and its
/// gateways drop every packet to or from the WAN — a link failure, not a refusal: the other
/// side sees silence until its timeouts.
pub fn cut_off(router_ns: &str, gateway_namespaces: &[&str], cut: bool) -> anyhow::Result<()> {
    let action = if cut { "-I" } else { "-D" };
    let mut rules = vec![(router_ns, "FORWARD", "-i"), (router_ns, "FORWARD", "-o")];
    for gw in gateway_namespaces {
        rules.push((gw, "INPUT", "-i"));
        rules.push((gw, "OUTPUT", "-o"));
    }
    for (ns, chain, direction) in rules {
        run_in(
            ns,
            &["iptables", action, chain, direction, WAN_LINK, "-j", "DROP"],
        )?;
    }
    Ok(())
}

/// The processes running in namespace `ns` (`ip netns pids`).
pub fn pids(ns: &str) -> Vec<i32> {
    let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Ends every process in namespace `ns` at once (SIGKILL, by PID): a pod or node that stops.
/// Returns how many it ended.
pub fn kill_all(ns: &str) -> usize {
    pids(ns)
        .into_iter()
        .filter_map(rustix::process::Pid::from_raw)
        .filter(|pid| rustix::process::kill_process(*pid, rustix::process::Signal::KILL).is_ok())
        .count()
}

/// Whether this process may create namespaces (root, or CAP_NET_ADMIN and CAP_SYS_ADMIN).
pub fn can_create_namespaces() -> bool {
    rustix::process::geteuid().is_root()
}

/// The namespaces (`ip netns list`) whose names start with `prefix-`.
pub fn list(prefix: &str) -> Vec<String> {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("{prefix}-")))
        .map(str::to_string)
        .collect()
}

/// Creates namespace `ns` with its loopback up.
pub fn add(ns: &str) -> anyhow::Result<()> {
    run("ip", &["netns", "add", ns])?;
    run_in(ns, &["ip", "link", "set", "lo", "up"])
}

/// Deletes namespace `ns` (its links and rules go with it) and its `/etc/netns` files.
pub fn delete(ns: &str) {
    let _ = Command::new("ip").args(["netns", "delete", ns]).output();
    let _ = std::fs::remove_dir_all(etc_dir(ns));
}

/// A bridge `br0` in `ns`, with `address/prefix_len` (a segment and its router) or without
/// (the WAN, where the routers and gateways meet).
pub fn add_bridge(ns: &str, address: Option<(Ipv4Addr, u8)>) -> anyhow::Result<()> {
    run_in(ns, &["ip", "link", "add", "br0", "type", "bridge"])?;
    match address {
        Some((address, prefix_len)) => address_up(ns, "br0", address, prefix_len),
        None => run_in(ns, &["ip", "link", "set", "br0", "up"]),
    }
}

/// Gives `dev` in `ns` `address/prefix_len` and brings it up.
fn address_up(ns: &str, dev: &str, address: Ipv4Addr, prefix_len: u8) -> anyhow::Result<()> {
    let cidr = format!("{address}/{prefix_len}");
    run_in(ns, &["ip", "addr", "add", &cidr, "dev", dev])?;
    run_in(ns, &["ip", "link", "set", dev, "up"])
}

/// A veth from `ns` (as `ifname`, with `address/prefix_len`) to the bridge in `bridge_ns`
/// (as `peer`); both ends up.
pub fn attach(
    ns: &str,
    ifname: &str,
    address: Ipv4Addr,
    prefix_len: u8,
    bridge_ns: &str,
    peer: &str,
) -> anyhow::Result<()> {
    run(
        "ip",
        &[
            "link", "add", ifname, "netns", ns, "type", "veth", "peer", "name", peer, "netns",
            bridge_ns,
        ],
    )?;
    run_in(
        bridge_ns,
        &["ip", "link", "set", peer, "master", "br0", "up"],
    )?;
    address_up(ns, ifname, address, prefix_len)
}

/// The directory whose files `ip netns exec` mounts over `/etc` for processes in `ns`.
pub fn etc_dir(ns: &str) -> PathBuf {
    PathBuf::from("/etc/netns").join(ns)
}

/// Gives processes started in `ns` (by `ip netns exec`) their own `/etc/<file>` (`hosts`,
/// `resolv.conf`).
pub fn write_etc(ns: &str, file: &str, text: &str) -> anyhow::Result<()> {
    let dir = etc_dir(ns);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(file);
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// Runs `f` on a thread that entered network namespace `ns`, and returns what it returns.
pub fn within<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> anyhow::Result<T> {
    let path = PathBuf::from("/var/run/netns").join(ns);
    let file = std::fs::File::open(&path)
        .with_context(|| format!("namespace {ns}: cannot open {}", path.display()))?;
    let handle = std::thread::spawn(move || {
        rustix::thread::move_into_link_name_space(
            std::os::fd::AsFd::as_fd(&file),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .map(|()| f())
    });
    match handle.join() {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => bail!("cannot enter namespace {ns}: {e}"),
        Err(_) => bail!("the task inside namespace {ns} failed"),
    }
}
