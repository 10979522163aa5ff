//! Header rules of the proxy: hop-by-hop headers go, `Upgrade` is recognised, and a
//! sandbox's `Set-Cookie` headers are made host-only.

use std::net::IpAddr;

use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::request::Parts;
use axum::http::{Uri, Version};

/// Cookies whose name starts with this are the server's own: a sandbox may not set them.
const RESERVED_COOKIE_PREFIX: &[u8] = b"cerver_";

/// Whether the client prefers a JSON error to an HTML page.
pub fn accepts_json(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/json") || v.contains("+json"))
}

/// Makes the upstream's `Set-Cookie` headers safe for the sandbox domain: a cookie named
/// `cerver_*` is dropped (the server's own names), and a `Domain` attribute is removed, so a
/// cookie is host-only and cannot reach other sandboxes or an API on a parent domain (cookie
/// tossing). Everything else is kept byte for byte.
pub fn restrict_set_cookies(headers: &mut HeaderMap) {
    if !headers.contains_key(header::SET_COOKIE) {
        return;
    }
    let values: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .cloned()
        .collect();
    headers.remove(header::SET_COOKIE);
    for value in values {
        if let Some(v) = host_only_cookie(value.as_bytes()) {
            headers.append(header::SET_COOKIE, v);
        }
    }
}

fn host_only_cookie(value: &[u8]) -> Option<HeaderValue> {
    let mut parts = value.split(|&b| b == b';');
    let pair = parts.next()?;
    // Without `=`, browsers take the whole pair as the value of a nameless cookie; treating it
    // as a name here only drops more.
    let name = pair.split(|&b| b == b'=').next()?.trim_ascii();
    if name.len() >= RESERVED_COOKIE_PREFIX.len()
        && name[..RESERVED_COOKIE_PREFIX.len()].eq_ignore_ascii_case(RESERVED_COOKIE_PREFIX)
    {
        return None;
    }
    let mut out = pair.to_vec();
    for attribute in parts {
        let attribute_name = attribute.split(|&b| b == b'=').next()?.trim_ascii();
        if !attribute_name.eq_ignore_ascii_case(b"domain") {
            out.push(b';');
            out.extend_from_slice(attribute);
        }
    }
    HeaderValue::from_bytes(&out).ok()
}

/// The protocol a request asks to switch to (`Connection: upgrade` + `Upgrade: <protocol>`).
pub(super) fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("upgrade"));
    asks.then(|| headers.get(header::UPGRADE).cloned())
        .flatten()
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Drops the hop-by-hop headers (RFC 9110 §7.6.1): those `Connection` names, `Connection`
/// itself, `Keep-Alive`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade` and every `Proxy-*`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = connection_tokens(headers)
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    let proxy: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("proxy-"))
        .cloned()
        .collect();
    for name in proxy {
        headers.remove(name);
    }
}

/// The request as the sandbox's server receives it: origin-form URI, HTTP/1.1, hop-by-hop
/// headers dropped, the client's `Host` kept, an asked-for upgrade restated, and the
/// `X-Forwarded-*` / `X-Real-IP` headers set by the proxy (never taken from the client).
pub(super) fn outbound_request(
    parts: &mut Parts,
    upgrade: Option<&HeaderValue>,
    scheme: &str,
    client: Option<IpAddr>,
) {
    // The host the client asked for goes through unchanged (an absolute URI's authority if any).
    let host = match parts.uri.authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => parts.headers.get(header::HOST).cloned(),
    };
    strip_hop_by_hop(&mut parts.headers);
    if let Some(host) = &host {
        parts.headers.insert(header::HOST, host.clone());
        parts
            .headers
            .insert(HeaderName::from_static("x-forwarded-host"), host.clone());
    }
    if let Some(protocol) = upgrade {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, protocol.clone());
    }
    if let Ok(v) = HeaderValue::from_str(scheme) {
        parts
            .headers
            .insert(HeaderName::from_static("x-forwarded-proto"), v);
    }
    set_client_headers(&mut parts.headers, client);
    parts.uri = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/")
        .parse()
        .unwrap_or_else(|_| Uri::from_static("/"));
    parts.version = Version::HTTP_11;
}

/// Client-supplied claims about the client are not passed on as if the proxy made them:
/// `Forwarded` (RFC 7239) goes, `X-Real-IP` becomes the real peer, which is also appended to
/// `X-Forwarded-For`.
fn set_client_headers(headers: &mut HeaderMap, client: Option<IpAddr>) {
    headers.remove(header::FORWARDED);
    let x_real_ip = HeaderName::from_static("x-real-ip");
    headers.remove(&x_real_ip);
    let Some(client) = client else {
        return;
    };
    if let Ok(v) = HeaderValue::from_str(&client.to_string()) {
        headers.insert(x_real_ip, v);
    }
    let xff = HeaderName::from_static("x-forwarded-for");
    let prior: Vec<&str> = headers
        .get_all(&xff)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let value = if prior.is_empty() {
        client.to_string()
    } else {
        format!("{}, {client}", prior.join(", "))
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(xff, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, X-Secret-Hop"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("trailer", "x-t"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "keep-alive"),
            ("x-secret-hop", "1"),
            ("x-end-to-end", "kept"),
            ("content-type", "text/plain"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["content-type", "x-end-to-end"]);
    }
}
