//! Port tokens: where a request presents one, checking it, and removing it before the
//! request reaches the sandbox.

use axum::extract::Request;
use axum::http::header::{self, HeaderValue};
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use cerver_control::ports::{PortTokens, TOKEN_PARAM};

use super::{TOKEN_COOKIE, TOKEN_HEADER};
use crate::error::proxy_error;

/// The token a request presents: `?cerver_token=`, `X-Cerver-Token`, then the cookie.
/// Returns the token and whether it came from the cookie.
fn presented_token(req: &Request) -> Option<(String, bool)> {
    let from_query = req.uri().query().and_then(|q| {
        q.split('&').find_map(|pair| match pair.split_once('=') {
            Some((TOKEN_PARAM, v)) => Some(v.to_string()),
            _ => None,
        })
    });
    let from_header = || {
        req.headers()
            .get(TOKEN_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_string())
    };
    if let Some(t) = from_query.or_else(from_header) {
        return Some((t, false));
    }
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|v| cookie_pairs(v.as_bytes()))
        .find_map(token_cookie_value)
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(|t| (t.to_string(), true))
}

/// The pairs of one `Cookie` header value, as bytes: `;`-separated, surrounding spaces trimmed,
/// empty ones skipped. Nothing else is assumed about them (a pair may lack `=`, a value may
/// hold any byte a header may).
fn cookie_pairs(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b';')
        .map(<[u8]>::trim_ascii)
        .filter(|p| !p.is_empty())
}

/// The value of a `cerver_port_token=<value>` pair.
fn token_cookie_value(pair: &[u8]) -> Option<&[u8]> {
    let eq = pair.iter().position(|&b| b == b'=')?;
    (pair[..eq].trim_ascii() == TOKEN_COOKIE.as_bytes()).then(|| pair[eq + 1..].trim_ascii())
}

/// Removes the port token from the query, the headers and the cookies: the sandbox's server
/// never sees it. A `Cookie` header without the token pair is left as it is; one with it loses
/// that pair only, every other pair kept byte for byte.
pub(super) fn strip_token(req: &mut Request) {
    req.headers_mut().remove(TOKEN_HEADER);
    let has_token =
        |v: &HeaderValue| cookie_pairs(v.as_bytes()).any(|p| token_cookie_value(p).is_some());
    if req.headers().get_all(header::COOKIE).iter().any(has_token) {
        let values: Vec<HeaderValue> = req
            .headers()
            .get_all(header::COOKIE)
            .iter()
            .cloned()
            .collect();
        req.headers_mut().remove(header::COOKIE);
        for value in values {
            if !has_token(&value) {
                req.headers_mut().append(header::COOKIE, value);
                continue;
            }
            let kept: Vec<&[u8]> = cookie_pairs(value.as_bytes())
                .filter(|p| token_cookie_value(p).is_none())
                .collect();
            if kept.is_empty() {
                continue;
            }
            // The kept bytes come from a valid header value, so they make one again.
            if let Ok(v) = HeaderValue::from_bytes(&kept.join(&b"; "[..])) {
                req.headers_mut().append(header::COOKIE, v);
            }
        }
    }
    let Some(query) = req.uri().query() else {
        return;
    };
    if !query
        .split('&')
        .any(|p| p.split_once('=').map_or(p, |(k, _)| k) == TOKEN_PARAM)
    {
        return;
    }
    let rest: Vec<&str> = query
        .split('&')
        .filter(|p| p.split_once('=').map_or(*p, |(k, _)| k) != TOKEN_PARAM)
        .collect();
    let path = req.uri().path();
    let pq = if rest.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", rest.join("&"))
    };
    let mut parts = req.uri().clone().into_parts();
    if let Ok(pq) = pq.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
}

pub(super) type ErrorPage = fn(bool) -> Response;

/// `Ok(Some(token))`: valid, and a cookie should keep it; `Ok(None)`: valid from the cookie;
/// `Err`: 401 without a token, 403 with a wrong one.
pub(super) fn check_token(
    tokens: &PortTokens,
    req: &Request,
    sandbox_id: &str,
    port: u16,
) -> Result<Option<String>, ErrorPage> {
    let Some((token, from_cookie)) = presented_token(req) else {
        return Err(|json| {
            proxy_error(
                StatusCode::UNAUTHORIZED,
                "token_required",
                "this port needs its access token: open the URL that GET /sandbox/:id/host gave",
                json,
            )
        });
    };
    if !tokens.verify(sandbox_id, port, &token) {
        return Err(|json| {
            proxy_error(
                StatusCode::FORBIDDEN,
                "invalid_token",
                "this access token does not open this port",
                json,
            )
        });
    }
    Ok((!from_cookie).then_some(token))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    #[test]
    fn tokens_are_found_and_stripped() {
        let mut req = axum::http::Request::builder()
            .uri("/a/b?x=1&cerver_token=abc&y=2")
            .header(TOKEN_HEADER, "def")
            .header("cookie", "a=1; cerver_port_token=ghi; b=2")
            .body(Body::empty())
            .unwrap();
        assert_eq!(presented_token(&req), Some(("abc".into(), false)));
        strip_token(&mut req);
        assert_eq!(req.uri().to_string(), "/a/b?x=1&y=2");
        assert!(req.headers().get(TOKEN_HEADER).is_none());
        assert_eq!(req.headers()["cookie"], "a=1; b=2");

        let mut req = axum::http::Request::builder()
            .uri("/?cerver_token=abc")
            .header("cookie", "cerver_port_token=ghi")
            .body(Body::empty())
            .unwrap();
        strip_token(&mut req);
        assert_eq!(req.uri().to_string(), "/");
        assert!(req.headers().get("cookie").is_none());

        let req = axum::http::Request::builder()
            .uri("/")
            .header("cookie", "cerver_port_token=ghi")
            .body(Body::empty())
            .unwrap();
        assert_eq!(presented_token(&req), Some(("ghi".into(), true)));
        let req = axum::http::Request::builder()
            .uri("/?cerver_tokenx=1")
            .body(Body::empty())
            .unwrap();
        assert_eq!(presented_token(&req), None);
    }

    fn cookie_after_strip(cookies: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut req = axum::http::Request::builder()
            .uri("/")
            .body(Body::empty())
            .unwrap();
        for c in cookies {
            req.headers_mut()
                .append(header::COOKIE, HeaderValue::from_bytes(c).unwrap());
        }
        strip_token(&mut req);
        req.headers()
            .get_all(header::COOKIE)
            .iter()
            .map(|v| v.as_bytes().to_vec())
            .collect()
    }

    #[test]
    fn cookies_are_untouched_unless_they_carry_the_token() {
        // No token pair: every byte stays, odd pairs included.
        for cookies in [
            &[&b"a=1;b=2;;  c"[..]][..],
            &[b"x=\xe9\xff; y=\"q\"", b"z"],
            &[b"cerver_port_tokenx=1; cerver_port_token"],
        ] {
            let want: Vec<Vec<u8>> = cookies.iter().map(|c| c.to_vec()).collect();
            assert_eq!(cookie_after_strip(cookies), want);
        }
        // With it: only that pair goes; the other pairs are kept as they were.
        assert_eq!(
            cookie_after_strip(&[b"a=\xe9; cerver_port_token=abc;noeq; b==2 ", b"c=3"]),
            [b"a=\xe9; noeq; b==2".to_vec(), b"c=3".to_vec()]
        );
        assert_eq!(
            cookie_after_strip(&[b" cerver_port_token = abc ", b"c=3"]),
            [b"c=3".to_vec()]
        );
        let req = axum::http::Request::builder()
            .uri("/")
            .header(
                "cookie",
                HeaderValue::from_bytes(b"a=\xff; cerver_port_token=ghi").unwrap(),
            )
            .body(Body::empty())
            .unwrap();
        assert_eq!(presented_token(&req), Some(("ghi".into(), true)));
    }
}
