//! `strait proxy-config`: what a running proxy holds, read from its admin API, in the tables
//! `istioctl proxy-config` users know (or the JSON behind them).

use std::io::Write;
use std::process::ExitCode;

use serde_json::Value;

/// Show a proxy's listeners, routes, clusters, endpoints or secrets (like `istioctl
/// proxy-config`).
///
/// Reads the proxy's admin API (`/config_dump`, `/clusters?format=json`, `/certs`). Endpoints
/// show each host's health and outlier state as the proxy sees them right now; secrets show each
/// certificate's serial number and validity (never a key).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to show.
    #[arg(value_enum)]
    pub what: What,
    /// The proxy's admin address.
    #[arg(long, default_value = "127.0.0.1:15000", value_name = "ADDR")]
    pub admin: String,
    /// Output: a table, or the JSON it is made from.
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum What {
    Listeners,
    Routes,
    Clusters,
    Endpoints,
    #[value(alias = "secrets")]
    Secret,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// GET `path` from the proxy's admin API, as JSON.
fn admin_get(admin: &str, path: &str) -> anyhow::Result<Value> {
    super::get_json(
        admin,
        path,
        "the proxy's admin API",
        "is the proxy running? (--admin ADDR)",
    )
}

fn table(rows: Vec<Vec<String>>) -> String {
    let widths: Vec<usize> = (0..rows.first().map_or(0, |r| r.len()))
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, cell)| format!("{cell:<w$}", w = widths[i]))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn filter_name(filter: &Value) -> String {
    if let Some(h) = filter.get("http") {
        return match h.get("route") {
            Some(r) if r.get("rds").is_some() => format!("Route: {}", s(&r["rds"])),
            _ => "Inline Route".into(),
        };
    }
    if let Some(t) = filter.get("tcp").or_else(|| filter.get("sni_cluster")) {
        let clusters: Vec<String> = t["clusters"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| s(&c[0]))
            .collect();
        return format!("Cluster: {}", clusters.join(","));
    }
    "-".into()
}

fn listeners(dump: &Value) -> Vec<Vec<String>> {
    let mut rows = vec![vec![
        "NAME".into(),
        "ADDRESS".into(),
        "PORT".into(),
        "MATCH".into(),
        "DESTINATION".into(),
    ]];
    for l in dump["listeners"].as_array().into_iter().flatten() {
        let name = s(&l["name"]);
        let Some(socket) = l["kind"].get("socket") else {
            rows.push(vec![
                name,
                "(api listener)".into(),
                "-".into(),
                "-".into(),
                filter_name(&serde_json::json!({"http": l["kind"]["api"]})),
            ]);
            continue;
        };
        let addr = s(&socket["address"]["ip"]);
        let port = s(&socket["address"]["port"]);
        let chains = socket["filter_chains"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for c in chains.iter().chain(
            socket["default_chain"]
                .as_object()
                .map(|_| &socket["default_chain"]),
        ) {
            let m = &c["matching"];
            let mut parts = Vec::new();
            if let Some(p) = m["destination_port"].as_u64() {
                parts.push(format!("port {p}"));
            }
            for key in ["prefix_ranges", "server_names", "application_protocols"] {
                let v: Vec<String> = m[key].as_array().into_iter().flatten().map(s).collect();
                if !v.is_empty() {
                    parts.push(v.join(","));
                }
            }
            if let Some(t) = m["transport_protocol"].as_str() {
                parts.push(format!("transport {t}"));
            }
            let matching = if parts.is_empty() {
                "ALL".to_string()
            } else {
                parts.join("; ")
            };
            rows.push(vec![
                name.clone(),
                addr.clone(),
                port.clone(),
                matching,
                filter_name(&c["filter"]),
            ]);
        }
    }
    rows
}

fn routes(dump: &Value) -> Vec<Vec<String>> {
    let mut rows = vec![vec![
        "NAME".into(),
        "VHOST NAME".into(),
        "DOMAINS".into(),
        "MATCH".into(),
        "ACTION".into(),
    ]];
    for rc in dump["routes"].as_array().into_iter().flatten() {
        for vh in rc["virtual_hosts"].as_array().into_iter().flatten() {
            let domains: Vec<String> = vh["domains"]
                .as_array()
                .into_iter()
                .flatten()
                .map(s)
                .collect();
            let shown = match domains.len() {
                0 => "-".to_string(),
                1 => domains[0].clone(),
                n => format!("{} +{}", domains[0], n - 1),
            };
            for r in vh["routes"].as_array().into_iter().flatten() {
                let path = &r["matching"]["path"];
                let matching = path
                    .as_object()
                    .and_then(|o| o.iter().next())
                    .map(|(k, v)| format!("{k} {}", s(v)))
                    .unwrap_or_else(|| "-".into());
                let action = &r["action"];
                let shown_action = if let Some(f) = action.get("forward") {
                    f["clusters"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|c| format!("{} ({})", s(&c["name"]), s(&c["weight"])))
                        .collect::<Vec<_>>()
                        .join(", ")
                } else if action.get("redirect").is_some() {
                    "redirect".into()
                } else {
                    "direct response".into()
                };
                rows.push(vec![
                    s(&rc["name"]),
                    s(&vh["name"]),
                    shown.clone(),
                    matching,
                    shown_action,
                ]);
            }
        }
    }
    rows
}

fn clusters(dump: &Value) -> Vec<Vec<String>> {
    let mut rows = vec![vec![
        "SERVICE FQDN".into(),
        "PORT".into(),
        "SUBSET".into(),
        "DIRECTION".into(),
        "TYPE".into(),
        "LB".into(),
    ]];
    for c in dump["clusters"].as_array().into_iter().flatten() {
        let name = s(&c["name"]);
        let parts: Vec<&str> = name.split('|').collect();
        let (direction, port, subset, host) = match parts[..] {
            [d, p, sub, h] => (d.to_string(), p.to_string(), sub.to_string(), h.to_string()),
            _ => ("-".into(), "-".into(), "-".into(), name.clone()),
        };
        let kind = c["discovery"]
            .as_object()
            .and_then(|o| o.keys().next().cloned())
            .or_else(|| c["discovery"].as_str().map(str::to_string))
            .unwrap_or_default()
            .to_ascii_uppercase();
        let lb = c["lb_policy"]
            .as_str()
            .map(str::to_string)
            .or_else(|| {
                c["lb_policy"]
                    .as_object()
                    .and_then(|o| o.keys().next().cloned())
            })
            .unwrap_or_default();
        rows.push(vec![
            if host.is_empty() { "-".into() } else { host },
            port,
            if subset.is_empty() {
                "-".into()
            } else {
                subset
            },
            direction,
            kind,
            lb,
        ]);
    }
    rows
}

fn endpoints(clusters: &Value) -> Vec<Vec<String>> {
    let mut rows = vec![vec![
        "ENDPOINT".into(),
        "STATUS".into(),
        "OUTLIER CHECK".into(),
        "PRIORITY".into(),
        "LOCALITY".into(),
        "CLUSTER".into(),
    ]];
    for c in clusters["clusters"].as_array().into_iter().flatten() {
        for h in c["hosts"].as_array().into_iter().flatten() {
            let l = &h["locality"];
            let locality = [&l["region"], &l["zone"], &l["sub_zone"]]
                .iter()
                .map(|v| s(v))
                .collect::<Vec<_>>()
                .join("/");
            rows.push(vec![
                s(&h["address"]),
                s(&h["health"]).to_ascii_uppercase(),
                if h["outlier_ejected"].as_bool() == Some(true) {
                    "FAILED".into()
                } else {
                    "OK".into()
                },
                s(&h["priority"]),
                locality.trim_matches('/').to_string(),
                s(&c["name"]),
            ]);
        }
    }
    rows
}

/// istioctl's secret table: a certificate chain's leaf, and each certificate of a CA bundle
/// (the JSON, `-o json`, has the chain's intermediates too).
fn secrets(certs: &Value) -> Vec<Vec<String>> {
    let mut rows = vec![vec![
        "RESOURCE NAME".into(),
        "TYPE".into(),
        "STATUS".into(),
        "VALID CERT".into(),
        "SERIAL NUMBER".into(),
        "NOT AFTER".into(),
        "NOT BEFORE".into(),
    ]];
    for secret in certs["secrets"].as_array().into_iter().flatten() {
        let (name, kind) = (s(&secret["name"]), s(&secret["type"]));
        let certificates = secret["certificates"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if certificates.is_empty() {
            let why = secret["error"].as_str().unwrap_or("no certificate");
            rows.push(vec![
                name.clone(),
                kind.clone(),
                "WARMING".into(),
                "false".into(),
                why.to_string(),
                "-".into(),
                "-".into(),
            ]);
        }
        let shown = if kind == "Cert Chain" {
            &certificates[..certificates.len().min(1)]
        } else {
            &certificates[..]
        };
        for c in shown {
            let valid = c["days_until_expiration"].as_i64().is_some_and(|d| d >= 0);
            rows.push(vec![
                name.clone(),
                kind.clone(),
                "ACTIVE".into(),
                valid.to_string(),
                s(&c["serial_number"]),
                s(&c["expiration_time"]),
                s(&c["valid_from"]),
            ]);
        }
    }
    rows
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let (value, rows) = match args.what {
        What::Endpoints => {
            let v = admin_get(&args.admin, "/clusters?format=json")?;
            let rows = endpoints(&v);
            (v, rows)
        }
        What::Secret => {
            let v = admin_get(&args.admin, "/certs")?;
            let rows = secrets(&v);
            (v, rows)
        }
        what => {
            let dump = admin_get(&args.admin, "/config_dump")?;
            let rows = match what {
                What::Listeners => listeners(&dump),
                What::Routes => routes(&dump),
                _ => clusters(&dump),
            };
            let key = match what {
                What::Listeners => "listeners",
                What::Routes => "routes",
                _ => "clusters",
            };
            (dump[key].clone(), rows)
        }
    };
    let mut out = std::io::stdout().lock();
    match args.output {
        Output::Json => writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?,
        Output::Table => write!(out, "{}", table(rows))?,
    }
    Ok(ExitCode::SUCCESS)
}
