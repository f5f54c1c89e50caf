//! VirtualService delegation, as Istio merges it: an HTTP route of a root VirtualService (one
//! with hosts) that names a `delegate` is replaced by the delegate's routes (a VirtualService
//! without hosts, visible to the root's namespace by its `exportTo`), each joined with the root
//! route — its match conditions narrowed by the root's (a delegate route whose conditions are not
//! within the root's is dropped, as Istio drops it) and the root route's settings filling what
//! the delegate route leaves unset. Pure: objects in, objects out.

use std::sync::Arc;

use super::common::StringMatch;
use super::traffic::{Delegate, HttpMatchRequest, HttpRoute, VirtualService};
use crate::resource::Object;

/// `services` with every root's delegating routes replaced by its delegates' (a root without
/// such routes, and every delegate, are returned as they were).
pub fn merge_delegates(
    services: &[Arc<Object<VirtualService>>],
) -> Vec<Arc<Object<VirtualService>>> {
    services
        .iter()
        .map(|vs| {
            let delegating =
                !vs.spec.hosts.is_empty() && vs.spec.http.iter().any(|r| r.delegate.is_some());
            if !delegating {
                return vs.clone();
            }
            let mut merged = (**vs).clone();
            merged.spec.http = vs
                .spec
                .http
                .iter()
                .flat_map(|route| match &route.delegate {
                    None => vec![route.clone()],
                    Some(d) => {
                        // A delegate missing, or not exported to the root's namespace: the
                        // route goes (Istio's behaviour), the root's other routes stay.
                        delegate(services, d, &vs.meta.namespace)
                            .map(|child| {
                                child
                                    .spec
                                    .http
                                    .iter()
                                    .filter_map(|c| join(route, c))
                                    .collect()
                            })
                            .unwrap_or_default()
                    }
                })
                .collect();
            Arc::new(merged)
        })
        .collect()
}

/// The VirtualService `named` if it is a delegate (no hosts) visible to `root_namespace`.
pub fn delegate<'a>(
    services: &'a [Arc<Object<VirtualService>>],
    named: &Delegate,
    root_namespace: &str,
) -> Option<&'a Object<VirtualService>> {
    let (namespace, name) = named.target(root_namespace);
    let vs = services.iter().find(|v| {
        v.meta.name == name && v.meta.namespace == namespace && v.spec.hosts.is_empty()
    })?;
    let visible =
        vs.spec.export_to.is_empty()
            || vs.spec.export_to.iter().any(|e| {
                e == "*" || e == root_namespace || (e == "." && namespace == root_namespace)
            });
    visible.then_some(&**vs)
}

/// Whether a delegate route's conditions fall within those of the root route naming its
/// VirtualService (else the merge drops it).
pub fn fits(root: &HttpRoute, child: &HttpRoute) -> bool {
    join_matches(&root.matches, &child.matches).is_some()
}

/// A delegate route joined with the root route naming its VirtualService, or `None` when its
/// conditions fall outside the root's.
fn join(root: &HttpRoute, child: &HttpRoute) -> Option<HttpRoute> {
    let mut out = child.clone();
    out.matches = join_matches(&root.matches, &child.matches)?;
    out.name = joined_name(&root.name, &child.name);
    out.delegate = None;
    fill(&mut out.rewrite, &root.rewrite);
    fill(&mut out.timeout, &root.timeout);
    fill(&mut out.retries, &root.retries);
    fill(&mut out.fault, &root.fault);
    fill(&mut out.mirror, &root.mirror);
    fill(&mut out.mirror_percent, &root.mirror_percent);
    fill(&mut out.mirror_percentage, &root.mirror_percentage);
    fill(&mut out.cors_policy, &root.cors_policy);
    fill(&mut out.headers, &root.headers);
    if out.mirrors.is_empty() {
        out.mirrors = root.mirrors.clone();
    }
    Some(out)
}

/// `<root>-<delegate>`, or whichever of the two names is set.
fn joined_name(root: &Option<String>, child: &Option<String>) -> Option<String> {
    match (root, child) {
        (Some(r), Some(c)) => Some(format!("{r}-{c}")),
        (r, c) => c.clone().or_else(|| r.clone()),
    }
}

fn fill<T: Clone>(field: &mut Option<T>, root: &Option<T>) {
    if field.is_none() {
        field.clone_from(root);
    }
}

/// Every delegate condition within some root condition, each joined with every root condition
/// it is within; `None` when one of them is within none.
fn join_matches(
    root: &[HttpMatchRequest],
    child: &[HttpMatchRequest],
) -> Option<Vec<HttpMatchRequest>> {
    if root.is_empty() {
        return Some(child.to_vec());
    }
    if child.is_empty() {
        return Some(root.to_vec());
    }
    let mut out = Vec::new();
    for c in child {
        let joined: Vec<HttpMatchRequest> = root
            .iter()
            .filter(|r| within(r, c))
            .map(|r| join_match(r, c))
            .collect();
        if joined.is_empty() {
            return None;
        }
        out.extend(joined);
    }
    Some(out)
}

/// Whether the delegate's condition `child` narrows the root's `root`: each of its URI, scheme,
/// method, authority, header and query conditions within the root's of the same name, the same
/// port and URI case rule. (Headers that must be absent only add up, so they never contradict.)
fn within(root: &HttpMatchRequest, child: &HttpMatchRequest) -> bool {
    let pairs = [
        (&root.uri, &child.uri),
        (&root.scheme, &child.scheme),
        (&root.method, &child.method),
        (&root.authority, &child.authority),
    ];
    pairs.iter().all(|(r, c)| narrows(r.as_ref(), c.as_ref()))
        && child
            .headers
            .iter()
            .all(|(k, v)| narrows(root.headers.get(k), Some(v)))
        && child
            .query_params
            .iter()
            .all(|(k, v)| narrows(root.query_params.get(k), Some(v)))
        && root.ignore_uri_case == child.ignore_uri_case
        && !matches!((root.port, child.port), (Some(r), Some(c)) if r != c)
}

/// Whether `child` matches only what `root` matches (either unset: no constraint between them).
/// Regular expressions cannot be compared, so they never narrow.
fn narrows(root: Option<&StringMatch>, child: Option<&StringMatch>) -> bool {
    let (Some(root), Some(child)) = (root, child) else {
        return true;
    };
    if root.regex.is_some() || child.regex.is_some() {
        return false;
    }
    match (&root.exact, &root.prefix) {
        (Some(exact), _) => child.prefix.is_none() && child.exact.as_ref() == Some(exact),
        (None, Some(prefix)) => child
            .prefix
            .as_ref()
            .or(child.exact.as_ref())
            .is_some_and(|c| c.starts_with(prefix.as_str())),
        (None, None) => false,
    }
}

/// The delegate's condition with what it leaves unset taken from the root's (header, query and
/// without-header conditions of both; the delegate's where both name one).
fn join_match(root: &HttpMatchRequest, child: &HttpMatchRequest) -> HttpMatchRequest {
    let mut out = child.clone();
    out.name = joined_name(&root.name, &child.name);
    fill(&mut out.uri, &root.uri);
    fill(&mut out.scheme, &root.scheme);
    fill(&mut out.method, &root.method);
    fill(&mut out.authority, &root.authority);
    fill(&mut out.port, &root.port);
    fill(&mut out.source_namespace, &root.source_namespace);
    for (k, v) in &root.headers {
        out.headers.entry(k.clone()).or_insert_with(|| v.clone());
    }
    for (k, v) in &root.query_params {
        out.query_params
            .entry(k.clone())
            .or_insert_with(|| v.clone());
    }
    for (k, v) in &root.without_headers {
        out.without_headers
            .entry(k.clone())
            .or_insert_with(|| v.clone());
    }
    for (k, v) in &root.source_labels {
        out.source_labels
            .entry(k.clone())
            .or_insert_with(|| v.clone());
    }
    if out.gateways.is_empty() {
        out.gateways = root.gateways.clone();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{LoadOptions, load_str};
    use crate::resource::ConfigSet;

    /// The VirtualServices in `yaml`, as loaded.
    fn loaded(yaml: &str) -> Vec<Arc<Object<VirtualService>>> {
        ConfigSet::from_resources(
            load_str(yaml, "vs.yaml", &LoadOptions::default()).into_resources(),
        )
        .virtual_services
    }

    fn services(yaml: &str) -> Vec<Arc<Object<VirtualService>>> {
        merge_delegates(&loaded(yaml))
    }

    /// `(name, uri condition, headers)` of each merged route of the root `bookinfo/root`.
    fn routes(merged: &[Arc<Object<VirtualService>>]) -> Vec<(String, String, Vec<String>)> {
        let root = merged.iter().find(|v| v.meta.name == "root").unwrap();
        root.spec
            .http
            .iter()
            .flat_map(|r| {
                let name = r.name.clone().unwrap_or_default();
                let conditions: Vec<(String, Vec<String>)> = if r.matches.is_empty() {
                    vec![(String::new(), vec![])]
                } else {
                    r.matches
                        .iter()
                        .map(|m| {
                            let uri = m.uri.as_ref().map_or(String::new(), |u| {
                                format!("{:?}", u.kind()).to_lowercase()
                            });
                            (uri, m.headers.keys().cloned().collect())
                        })
                        .collect()
                };
                conditions
                    .into_iter()
                    .map(move |(u, h)| (name.clone(), u, h))
            })
            .collect()
    }

    const ROOT: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: root, namespace: bookinfo}
spec:
  hosts: [bookinfo.example.com]
  gateways: [bookinfo-gateway]
  http:
  - name: products
    match: [{uri: {prefix: /productpage}, headers: {x-team: {exact: web}}}]
    timeout: 3s
    delegate: {name: productpage, namespace: web}
  - name: missing
    match: [{uri: {prefix: /gone}}]
    delegate: {name: nowhere}
  - name: rest
    route: [{destination: {host: reviews}}]
";

    #[test]
    fn delegate_routes_take_the_root_routes_place_narrowed_by_its_conditions() {
        let merged = services(&format!(
            "{ROOT}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: productpage, namespace: web}}
spec:
  http:
  - name: v2
    match: [{{uri: {{exact: /productpage/v2}}, headers: {{x-beta: {{exact: 'on'}}}}}}]
    timeout: 1s
    route: [{{destination: {{host: productpage, subset: v2}}}}]
  - name: elsewhere
    match: [{{uri: {{prefix: /admin}}}}]
    route: [{{destination: {{host: admin}}}}]
  - route: [{{destination: {{host: productpage, subset: v1}}}}]
"
        ));
        assert_eq!(
            routes(&merged),
            [
                (
                    "products-v2".to_string(),
                    "exact(\"/productpage/v2\")".to_string(),
                    vec!["x-beta".to_string(), "x-team".to_string()]
                ),
                (
                    "products".to_string(),
                    "prefix(\"/productpage\")".to_string(),
                    vec!["x-team".to_string()]
                ),
                ("rest".to_string(), String::new(), vec![]),
            ],
            "/admin is not within /productpage: dropped; the missing delegate's route goes"
        );
        let root = merged.iter().find(|v| v.meta.name == "root").unwrap();
        // The delegate route's own timeout stays; the one without takes the root route's.
        let timeout = |vs: &str, route: usize| {
            merged.iter().find(|v| v.meta.name == vs).unwrap().spec.http[route]
                .timeout
                .clone()
        };
        assert_eq!(root.spec.http[0].timeout, timeout("productpage", 0));
        assert_eq!(
            root.spec.http[1].timeout,
            loaded(ROOT)[0].spec.http[0].timeout.clone()
        );
        assert_ne!(root.spec.http[0].timeout, root.spec.http[1].timeout);
        assert!(root.spec.http.iter().all(|r| r.delegate.is_none()));
    }

    #[test]
    fn a_delegate_not_exported_to_the_roots_namespace_is_not_taken() {
        let merged = services(&format!(
            "{ROOT}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: productpage, namespace: web}}
spec:
  exportTo: [.]
  http:
  - route: [{{destination: {{host: productpage}}}}]
"
        ));
        assert_eq!(
            routes(&merged),
            [("rest".to_string(), String::new(), vec![])]
        );
    }

    #[test]
    fn conditions_narrow_by_exact_and_prefix_and_regular_expressions_never_do() {
        let m = |exact: Option<&str>, prefix: Option<&str>, regex: Option<&str>| StringMatch {
            exact: exact.map(Into::into),
            prefix: prefix.map(Into::into),
            regex: regex.map(Into::into),
        };
        let prefix = m(None, Some("/api"), None);
        assert!(narrows(
            Some(&prefix),
            Some(&m(None, Some("/api/v1"), None))
        ));
        assert!(narrows(Some(&prefix), Some(&m(Some("/api/x"), None, None))));
        assert!(!narrows(Some(&prefix), Some(&m(None, Some("/ap"), None))));
        let exact = m(Some("/a"), None, None);
        assert!(narrows(Some(&exact), Some(&m(Some("/a"), None, None))));
        assert!(!narrows(Some(&exact), Some(&m(None, Some("/a"), None))));
        assert!(!narrows(
            Some(&prefix),
            Some(&m(None, None, Some("/api.*")))
        ));
        assert!(narrows(None, Some(&exact)) && narrows(Some(&exact), None));
    }
}
