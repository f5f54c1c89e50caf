//! The debug and metrics API (port 15014 by default): `/ready`, `/metrics`, `/debug/syncz`,
//! `/debug/config_dump?proxy=ID`, `/debug/config_problems`, and pages other parts of the control
//! plane add (`/debug/remotez`: the remote clusters' sync states).

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::debug;

use crate::XdsServer;

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn json(value: &serde_json::Value) -> Response<Full<Bytes>> {
    reply(
        StatusCode::OK,
        "application/json",
        serde_json::to_string_pretty(value).unwrap_or_default() + "\n",
    )
}

fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| {
        kv.split_once('=')
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v)
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn handle(server: &XdsServer, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET is served here\n".into(),
        );
    }
    let query = req.uri().query().unwrap_or("");
    match req.uri().path() {
        "/ready" | "/healthz/ready" => {
            if server.is_ready() {
                reply(StatusCode::OK, "text/plain", "ready\n".into())
            } else {
                reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "not ready: the xDS listener is not serving yet\n".into())
            }
        }
        "/metrics" => reply(StatusCode::OK, "application/openmetrics-text; version=1.0.0; charset=utf-8", server.metrics_text()),
        "/debug/syncz" => {
            let list: Vec<serde_json::Value> = server
                .connections()
                .iter()
                .map(|c| {
                    serde_json::json!({
                        "proxy": c.node_id, "kind": c.kind, "cluster": c.cluster, "network": c.network,
                        "locality": c.locality, "protocol": c.protocol, "connected_at": c.connected_at,
                        "types": c.status(),
                    })
                })
                .collect();
            json(&serde_json::json!({ "version": server.current().version, "proxies": list }))
        }
        "/debug/config_dump" => match query_param(query, "proxy").map(percent_decode) {
            None => reply(StatusCode::BAD_REQUEST, "text/plain", "give ?proxy=<node ID>; /debug/syncz lists connected proxies\n".into()),
            Some(id) => match server.config_dump(&id) {
                Some(v) => json(&v),
                None => reply(StatusCode::NOT_FOUND, "text/plain", format!("no connected proxy has node ID \"{id}\"; /debug/syncz lists connected proxies\n")),
            },
        },
        "/debug/config_problems" => {
            let current = server.current();
            let problems: Vec<String> = current.snapshot.problems.iter().map(ToString::to_string).collect();
            json(&serde_json::json!({ "version": current.version, "problems": problems }))
        }
        path => match server.debug_page(path) {
            Some(page) => json(&page()),
            None => reply(StatusCode::NOT_FOUND, "text/plain", "endpoints: /ready /metrics /debug/syncz /debug/config_dump?proxy=ID /debug/config_problems /debug/remotez\n".into()),
        },
    }
}

/// Serves the debug API on `listener` until `shutdown` fires.
pub async fn serve_debug(
    server: XdsServer,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => { debug!("debug listener accept failed: {e}"); continue; }
            },
        };
        let server = server.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let r = handle(&server, &req);
                async move { Ok::<_, Infallible>(r) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
