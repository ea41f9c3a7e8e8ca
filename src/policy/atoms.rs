//! The smallest pieces of the language: names, addresses, endpoints,
//! subjects, targets and flow targets, each parsed from one word.

use std::net::IpAddr;

use super::ast::{EndRef, Endpoint, Host, Subject, Target, MAX_NAME};
use super::diag::{Diagnostic, Span};
use super::ports::{parse_num, Flow};
use crate::keys::PublicKey;
use crate::net::IpNet;

type PResult<T> = Result<T, Diagnostic>;

/// Node, role, service and rule names: a letter or digit, then letters,
/// digits, `-`, `_` or `.`.
pub fn name(w: &str, span: Span) -> PResult<String> {
    let ok = w.len() <= MAX_NAME
        && w.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && w.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(w.to_string())
    } else {
        Err(Diagnostic::syntax(
            span,
            format!("expected a name (letters, digits, `-`, `_`, `.`; at most {MAX_NAME} characters), found `{w}`"),
        ))
    }
}

pub(super) fn cidr(w: &str, span: Span) -> PResult<IpNet> {
    w.parse::<IpNet>().map_err(|e| {
        Diagnostic::syntax(
            span,
            format!("{e} in `{w}` (as in 10.0.0.1/24 or fd00::1/64)"),
        )
    })
}

pub(super) fn network(w: &str, span: Span) -> PResult<IpNet> {
    let net = cidr(w, span)?;
    if !net.is_network() {
        return Err(Diagnostic::syntax(
            span,
            format!(
                "`{w}` has host bits set; expected the network {}",
                net.network()
            ),
        ));
    }
    Ok(net)
}

pub(super) fn endpoint(w: &str, span: Span) -> PResult<Endpoint> {
    let bad = || {
        Diagnostic::syntax(
            span,
            format!("expected an endpoint HOST:PORT or [IPv6]:PORT, found `{w}`"),
        )
    };
    let (host, port) = if let Some(rest) = w.strip_prefix('[') {
        let (h, p) = rest.split_once("]:").ok_or_else(bad)?;
        (Host::Ip(IpAddr::V6(h.parse().map_err(|_| bad())?)), p)
    } else {
        let (h, p) = w.rsplit_once(':').ok_or_else(bad)?;
        if h.contains(':') {
            return Err(Diagnostic::syntax(
                span,
                format!("write an IPv6 endpoint as [ADDRESS]:PORT, found `{w}`"),
            ));
        }
        let host = match h.parse::<IpAddr>() {
            Ok(ip) => Host::Ip(ip),
            Err(_) => {
                let valid = !h.is_empty()
                    && h.len() <= 253
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
                if !valid {
                    return Err(bad());
                }
                Host::Name(h.to_string())
            }
        };
        (host, p)
    };
    let port = parse_num(port, 65535).ok_or_else(bad)? as u16;
    Ok(Endpoint { host, port })
}

fn looks_like_key(w: &str) -> bool {
    w.len() == 44 && w.ends_with('=')
}

pub(super) fn subject(w: &str, span: Span) -> PResult<Subject> {
    if w == "*" {
        return Ok(Subject::Everyone);
    }
    if let Some(r) = w.strip_prefix("role:") {
        return if r == "*" {
            Ok(Subject::Everyone)
        } else {
            name(r, span).map(Subject::Role)
        };
    }
    if let Some(n) = w.strip_prefix("node:") {
        return name(n, span).map(Subject::Node);
    }
    let k = w.strip_prefix("key:").unwrap_or(w);
    if looks_like_key(k) {
        return PublicKey::from_base64(k)
            .map(Subject::Key)
            .map_err(|e| Diagnostic::syntax(span, format!("bad key: {e}")));
    }
    Err(Diagnostic::syntax(
        span,
        format!("expected *, role:NAME, node:NAME or a public key, found `{w}`"),
    ))
}

pub(super) fn target(w: &str, span: Span) -> PResult<Target> {
    if w == "*" {
        return Ok(Target::Everyone);
    }
    if let Some(r) = w.strip_prefix("role:") {
        return name(r, span).map(Target::Role);
    }
    if let Some(n) = w.strip_prefix("node:") {
        return name(n, span).map(Target::Node);
    }
    if w.bytes().next().is_some_and(|b| b.is_ascii_hexdigit())
        && (w.contains('.') || w.contains(':'))
    {
        return network(w, span).map(Target::Cidr);
    }
    Err(Diagnostic::syntax(
        span,
        format!("expected *, role:NAME, node:NAME or a CIDR such as 10.18.1.0/24, found `{w}`"),
    ))
}

/// Parses a node name, `node:NAME`, `role:NAME`, `*`, an address or a key.
pub fn end_ref(w: &str, span: Span) -> PResult<EndRef> {
    if w == "*" {
        return Ok(EndRef::Everyone);
    }
    if let Some(r) = w.strip_prefix("role:") {
        return name(r, span).map(EndRef::Role);
    }
    if let Some(n) = w.strip_prefix("node:") {
        return name(n, span).map(EndRef::Node);
    }
    if let Ok(ip) = w.parse::<IpAddr>() {
        return Ok(EndRef::Addr(ip));
    }
    let k = w.strip_prefix("key:").unwrap_or(w);
    if looks_like_key(k) {
        return PublicKey::from_base64(k)
            .map(EndRef::Key)
            .map_err(|e| Diagnostic::syntax(span, format!("bad key: {e}")));
    }
    name(w, span).map(EndRef::Node).map_err(|_| {
        Diagnostic::syntax(
            span,
            format!("expected a node name, role:NAME, an address or a public key, found `{w}`"),
        )
    })
}

/// Splits `TARGET[:PORT/PROTO]`; IPv6 targets with a flow are bracketed.
pub fn split_target(w: &str, span: Span) -> PResult<(EndRef, Option<Flow>)> {
    let flow = |f: &str| Flow::parse(f).map_err(|m| Diagnostic::syntax(span, m));
    if let Some(rest) = w.strip_prefix('[') {
        let (addr, tail) = rest.split_once(']').ok_or_else(|| {
            Diagnostic::syntax(span, format!("expected [IPv6]:PORT/PROTO, found `{w}`"))
        })?;
        let ip: IpAddr = addr.parse().map_err(|_| {
            Diagnostic::syntax(span, format!("expected an IPv6 address, found `{addr}`"))
        })?;
        return match tail {
            "" => Ok((EndRef::Addr(ip), None)),
            t => match t.strip_prefix(':') {
                Some(f) => Ok((EndRef::Addr(ip), Some(flow(f)?))),
                None => Err(Diagnostic::syntax(
                    span,
                    format!("expected :PORT/PROTO after `]`, found `{t}`"),
                )),
            },
        };
    }
    let prefixed = |t: &str| ["node:", "role:", "key:"].iter().any(|p| t.starts_with(p));
    match w.rsplit_once(':') {
        // `b:80` is a flow missing its protocol; `fd00::1` is an address.
        Some((t, f))
            if !["key", "node", "role"].contains(&t)
                && (f.contains('/') || !t.contains(':') || prefixed(t)) =>
        {
            if t.contains(':') && !prefixed(t) {
                return Err(Diagnostic::syntax(
                    span,
                    format!(
                        "write an IPv6 address with a port as [ADDRESS]:PORT/PROTO, found `{w}`"
                    ),
                ));
            }
            Ok((end_ref(t, span)?, Some(flow(f)?)))
        }
        _ => Ok((end_ref(w, span)?, None)),
    }
}
