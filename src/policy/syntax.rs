//! The policy language's statements and a hand-written, line-oriented parser.
//!
//! Every line is one statement; a bad line yields a diagnostic and parsing
//! goes on with the next line, so one run reports every syntax error.

use super::ast::{
    ExpectStmt, Loc, NodeStmt, RuleKind, RuleStmt, ServiceStmt, Stmt, StmtKind, Want,
};
use super::atoms::{cidr, endpoint, network, subject, target};
use super::atoms::{end_ref, name, split_target};
use super::diag::{Diagnostic, Span};
use super::lexer::{lex_line, Tok, Token};
use super::ports::{parse_num, parse_port_item, PortSet};
use crate::keys::PublicKey;
use crate::time::parse_rfc3339;

/// Past this many errors the rest are noise.
pub const MAX_ERRORS: usize = 100;

/// Parses a whole policy text into statements plus every syntax error found.
pub fn parse_statements(text: &str) -> (Vec<Stmt>, Vec<Diagnostic>) {
    let mut stmts = Vec::new();
    let mut errors = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        let line_no = u32::try_from(i + 1).unwrap_or(u32::MAX);
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if let Some((col, c)) = line
            .chars()
            .enumerate()
            .find(|(_, c)| super::diag::is_unprintable(*c))
        {
            let span = Span {
                line: line_no,
                col: u32::try_from(col + 1).unwrap_or(u32::MAX),
                len: 1,
            };
            errors.push(Diagnostic::syntax(
                span,
                format!(
                    "character {} is not allowed in a policy (control characters and bidirectional overrides would be echoed into terminals and logs); remove it",
                    c.escape_unicode()
                ),
            ));
            if errors.len() >= MAX_ERRORS {
                break;
            }
            continue;
        }
        let toks = lex_line(line_no, line);
        if toks.is_empty() {
            continue;
        }
        let mut p = Parser {
            toks: &toks,
            pos: 0,
            line: line_no,
            end_col: line.chars().count() as u32 + 1,
        };
        match p.statement() {
            Ok(kind) => stmts.push(Stmt {
                kind,
                line: line_no,
                canonical: canonical(&toks),
            }),
            Err(e) => {
                errors.push(e);
                if errors.len() >= MAX_ERRORS {
                    break;
                }
            }
        }
    }
    (stmts, errors)
}

fn canonical(toks: &[Token<'_>]) -> String {
    let mut out = String::new();
    for t in toks {
        match t.tok {
            Tok::Word(w) => {
                if !out.is_empty() && !out.ends_with(',') {
                    out.push(' ');
                }
                out.push_str(w);
            }
            Tok::Comma => out.push(','),
            Tok::Arrow => out.push_str(" ->"),
        }
    }
    out
}

struct Parser<'t, 'a> {
    toks: &'t [Token<'a>],
    pos: usize,
    line: u32,
    end_col: u32,
}

type PResult<T> = Result<T, Diagnostic>;

impl<'a> Parser<'_, 'a> {
    fn peek(&self) -> Option<Token<'a>> {
        self.toks.get(self.pos).copied()
    }

    fn here(&self) -> Span {
        self.peek().map(|t| t.span).unwrap_or(Span {
            line: self.line,
            col: self.end_col,
            len: 1,
        })
    }

    fn describe(&self) -> String {
        match self.peek().map(|t| t.tok) {
            None => "end of line".into(),
            Some(Tok::Comma) => "`,`".into(),
            Some(Tok::Arrow) => "`->`".into(),
            Some(Tok::Word(w)) => format!("`{w}`"),
        }
    }

    fn word(&mut self, expected: &str) -> PResult<(&'a str, Span)> {
        match self.peek() {
            Some(Token {
                tok: Tok::Word(w),
                span,
            }) => {
                self.pos += 1;
                Ok((w, span))
            }
            _ => Err(Diagnostic::syntax(
                self.here(),
                format!("expected {expected}, found {}", self.describe()),
            )),
        }
    }

    fn peek_word(&self) -> Option<&'a str> {
        match self.peek()?.tok {
            Tok::Word(w) => Some(w),
            _ => None,
        }
    }

    fn eat_comma(&mut self) -> bool {
        let comma = matches!(self.peek().map(|t| t.tok), Some(Tok::Comma));
        if comma {
            self.pos += 1;
        }
        comma
    }

    fn arrow(&mut self) -> PResult<()> {
        match self.peek().map(|t| t.tok) {
            Some(Tok::Arrow) => {
                self.pos += 1;
                Ok(())
            }
            _ => Err(Diagnostic::syntax(
                self.here(),
                format!("expected `->`, found {}", self.describe()),
            )),
        }
    }

    fn end(&self) -> PResult<()> {
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(Diagnostic::syntax(
                self.here(),
                format!("expected end of line, found {}", self.describe()),
            )),
        }
    }

    /// A comma-separated list of words, each parsed by `item`.
    fn list<T>(
        &mut self,
        expected: &str,
        mut item: impl FnMut(&str, Span) -> PResult<T>,
    ) -> PResult<Vec<Loc<T>>> {
        let mut out = Vec::new();
        loop {
            let (w, span) = self.word(expected)?;
            out.push(Loc {
                value: item(w, span)?,
                span,
            });
            if !self.eat_comma() {
                return Ok(out);
            }
        }
    }

    fn statement(&mut self) -> PResult<StmtKind> {
        let (kw, span) = self.word("a statement")?;
        match kw {
            "node" => self.node().map(StmtKind::Node),
            "role" | "roles" => {
                let names = self.list("a role name", name)?;
                self.end()?;
                Ok(StmtKind::Role(names))
            }
            "service" => self.service().map(StmtKind::Service),
            "allow" => self.rule(RuleKind::Allow, false).map(StmtKind::Rule),
            "deny" => self.rule(RuleKind::Deny, false).map(StmtKind::Rule),
            "quarantine" => self.rule(RuleKind::Quarantine, false).map(StmtKind::Rule),
            "audit" => match self.word("`allow` or `deny` after `audit`")? {
                ("allow", _) => self.rule(RuleKind::Allow, true).map(StmtKind::Rule),
                ("deny", _) => self.rule(RuleKind::Deny, true).map(StmtKind::Rule),
                (w, s) => Err(Diagnostic::syntax(s, format!("expected `allow` or `deny` after `audit`, found `{w}`"))),
            },
            "expect" => self.expect().map(StmtKind::Expect),
            other => Err(Diagnostic::syntax(
                span,
                format!("expected a statement (node, role, service, allow, deny, audit, quarantine, expect), found `{other}`"),
            )),
        }
    }

    fn node(&mut self) -> PResult<NodeStmt> {
        let (n, nspan) = self.word("a node name")?;
        let mut node = NodeStmt {
            name: Loc {
                value: name(n, nspan)?,
                span: nspan,
            },
            key: None,
            addrs: Vec::new(),
            endpoint: None,
            roles: Vec::new(),
            serves: Vec::new(),
            keepalive: None,
            psk: None,
        };
        let mut seen: Vec<&str> = Vec::new();
        while let Some(Token { span, .. }) = self.peek() {
            let (attr, _) =
                self.word("a node attribute (key, addr, endpoint, roles, serves, keepalive, psk)")?;
            let attr = match attr {
                "address" | "addrs" => "addr",
                "role" => "roles",
                a => a,
            };
            if seen.contains(&attr) {
                return Err(Diagnostic::syntax(
                    span,
                    format!("`{attr}` is given twice for node {n}"),
                ));
            }
            seen.push(attr);
            match attr {
                "key" => {
                    let (k, s) = self.word("a public key (44 characters of base64)")?;
                    let key = PublicKey::from_base64(k).map_err(|e| Diagnostic::syntax(s, format!("bad key: {e}")))?;
                    node.key = Some(Loc { value: key, span: s });
                }
                "addr" => node.addrs = self.list("a tunnel address such as 10.0.0.1/24 or fd00::1/64", cidr)?,
                "serves" => node.serves = self.list("a network such as 10.18.0.0/16", network)?,
                "roles" => node.roles = self.list("a role name", name)?,
                "endpoint" => {
                    let (e, s) = self.word("an endpoint HOST:PORT")?;
                    node.endpoint = Some(endpoint(e, s)?);
                }
                "keepalive" => {
                    let (k, s) = self.word("a keepalive interval in seconds")?;
                    let v = parse_num(k, 65535)
                        .ok_or_else(|| Diagnostic::syntax(s, format!("expected seconds from 0 to 65535, found `{k}`")))?;
                    node.keepalive = Some(v as u16);
                }
                "psk" => {
                    let (p, _) = self.word("a preshared key file path")?;
                    node.psk = Some(p.to_string());
                }
                other => {
                    return Err(Diagnostic::syntax(
                        span,
                        format!(
                            "expected a node attribute (key, addr, endpoint, roles, serves, keepalive, psk), found `{other}`"
                        ),
                    ))
                }
            }
        }
        if node.key.is_none() {
            return Err(Diagnostic::syntax(
                self.here(),
                format!("node {n} needs `key BASE64`"),
            ));
        }
        if node.addrs.is_empty() {
            return Err(Diagnostic::syntax(
                self.here(),
                format!("node {n} needs `addr ADDRESS[,ADDRESS]`"),
            ));
        }
        Ok(node)
    }

    fn service(&mut self) -> PResult<ServiceStmt> {
        let (n, nspan) = self.word("a service name")?;
        let name = Loc {
            value: name(n, nspan)?,
            span: nspan,
        };
        let targets = self.list(
            "where the service lives: *, role:NAME, node:NAME or a CIDR",
            target,
        )?;
        let mut ports = PortSet::default();
        let mut prev = None;
        loop {
            let (w, s) =
                self.word("ports: any, ping, tcp/PORT, udp/PORT-PORT, icmp/TYPE, proto/N ...")?;
            let item = parse_port_item(w, prev).map_err(|m| Diagnostic::syntax(s, m))?;
            prev = match item {
                super::ports::PortItem::Range(p, _, _) | super::ports::PortItem::Proto(p) => {
                    Some(p)
                }
                _ => None,
            };
            ports.add(&item);
            self.eat_comma();
            if self.peek().is_none() {
                break;
            }
        }
        Ok(ServiceStmt {
            name,
            targets,
            ports,
        })
    }

    fn rule(&mut self, kind: RuleKind, audit: bool) -> PResult<RuleStmt> {
        let subjects = "who: *, role:NAME, node:NAME or a public key";
        let from = self.list(subjects, subject)?;
        let mut rule = RuleStmt {
            kind,
            audit,
            from,
            to: Vec::new(),
            except: Vec::new(),
            until: None,
            reject: false,
            name: None,
        };
        if kind != RuleKind::Quarantine {
            self.arrow()?;
            rule.to = self.list("a service name or *", |w, s| {
                if w == "*" {
                    Ok(w.to_string())
                } else {
                    name(w, s)
                }
            })?;
        }
        let mut seen: Vec<&str> = Vec::new();
        while let Some(Token { span, .. }) = self.peek() {
            let (opt, _) = self.word("an option")?;
            if seen.contains(&opt) {
                return Err(Diagnostic::syntax(span, format!("`{opt}` is given twice")));
            }
            seen.push(opt);
            match opt {
                "except" if kind != RuleKind::Quarantine => {
                    rule.except = self.list(subjects, subject)?
                }
                "until" => {
                    let (t, s) = self.word("an RFC 3339 time such as 2026-05-01T17:00:00Z")?;
                    let secs = parse_rfc3339(t).ok_or_else(|| {
                        Diagnostic::syntax(s, format!("expected an RFC 3339 time such as 2026-05-01T17:00:00Z, found `{t}`"))
                    })?;
                    rule.until = Some(Loc {
                        value: secs,
                        span: s,
                    });
                }
                "reject" if kind == RuleKind::Deny => rule.reject = true,
                "reject" => {
                    return Err(Diagnostic::syntax(
                        span,
                        "`reject` only applies to deny rules",
                    ))
                }
                "as" => {
                    let (n, s) = self.word("a rule name")?;
                    if n.strip_prefix('r')
                        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
                    {
                        return Err(Diagnostic::syntax(
                            s,
                            format!("`{n}` looks like an automatic rule id; choose another name"),
                        ));
                    }
                    rule.name = Some(Loc {
                        value: name(n, s)?,
                        span: s,
                    });
                }
                other => {
                    let opts = if kind == RuleKind::Quarantine {
                        "until or as"
                    } else {
                        "except, until, reject or as"
                    };
                    return Err(Diagnostic::syntax(
                        span,
                        format!("expected {opts}, found `{other}`"),
                    ));
                }
            }
        }
        Ok(rule)
    }

    fn expect(&mut self) -> PResult<ExpectStmt> {
        let (f, fspan) = self.word("a source: node name, role:NAME, address or key")?;
        let from = Loc {
            value: end_ref(f, fspan)?,
            span: fspan,
        };
        self.arrow()?;
        let (t, tspan) =
            self.word("a destination: node name, role:NAME, address or key, then :PORT/PROTO")?;
        let (to, flow) = split_target(t, tspan)?;
        match self.word("`is`")? {
            ("is", _) => {}
            (w, s) => return Err(Diagnostic::syntax(s, format!("expected `is`, found `{w}`"))),
        }
        let want = match self.word("allow, deny, drop or reject")? {
            ("allow", _) => Want::Allow,
            ("deny", _) => Want::Deny,
            ("drop", _) => Want::Drop,
            ("reject", _) => Want::Reject,
            (w, s) => {
                return Err(Diagnostic::syntax(
                    s,
                    format!("expected allow, deny, drop or reject, found `{w}`"),
                ))
            }
        };
        let mut at = None;
        if self.peek_word() == Some("at") {
            self.pos += 1;
            let (w, s) = self.word("an RFC 3339 time")?;
            at = Some(parse_rfc3339(w).ok_or_else(|| {
                Diagnostic::syntax(
                    s,
                    format!("expected an RFC 3339 time such as 2026-05-01T17:00:00Z, found `{w}`"),
                )
            })?);
        }
        self.end()?;
        Ok(ExpectStmt {
            from,
            to: Loc {
                value: to,
                span: tspan,
            },
            flow,
            want,
            at,
        })
    }
}
