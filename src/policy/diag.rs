//! Diagnostics: errors and warnings that point at `file:line:col`, show the
//! offending line with a caret and say what was expected.

use std::fmt;

/// A place in the policy text: 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Span {
    pub line: u32,
    pub col: u32,
    /// Width in characters of the offending text (at least 1).
    pub len: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

/// One finding about a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// Stable machine-readable name, such as `unknown-name` or `shadowed-rule`.
    pub code: &'static str,
    pub span: Span,
    /// What is wrong and what was expected.
    pub message: String,
    /// The offending line, filled in once the text is known (a window of
    /// it around the column when the line is long).
    pub source_line: String,
    /// Characters of the line left out before `source_line`'s window.
    pub(crate) source_skip: u32,
}

/// Longest message kept; messages quote policy text, which may be huge.
const MAX_MESSAGE_CHARS: usize = 1000;
/// Lines up to this many characters are shown whole; longer ones as a
/// window of [`SOURCE_CONTEXT`] characters before the column and three
/// times as many after it.
const SOURCE_WHOLE: usize = 400;
const SOURCE_CONTEXT: usize = 100;

/// Makes policy text safe to print on a terminal or into a log line:
/// control characters (escape sequences, NUL, ...) and bidirectional
/// overrides are shown escaped, and the text is cut after `max` characters.
pub fn sanitize(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max + 8));
    for (n, c) in text.chars().enumerate() {
        if n >= max {
            out.push('…');
            break;
        }
        if is_unprintable(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// Characters a policy may not contain anywhere: they would be echoed into
/// terminals and logs (escape sequences, NUL) or make text read differently
/// from how it parses (bidirectional controls). Tabs are fine.
pub fn is_unprintable(c: char) -> bool {
    (c.is_control() && c != '\t')
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

impl Diagnostic {
    /// A syntax error: the line does not parse.
    pub fn syntax(span: Span, message: impl Into<String>) -> Self {
        Self::error("syntax", span, message)
    }

    pub fn error(code: &'static str, span: Span, message: impl Into<String>) -> Self {
        Self::new(Severity::Error, code, span, message.into())
    }

    pub fn warning(code: &'static str, span: Span, message: impl Into<String>) -> Self {
        Self::new(Severity::Warning, code, span, message.into())
    }

    fn new(severity: Severity, code: &'static str, span: Span, message: String) -> Self {
        let clean =
            message.chars().count() <= MAX_MESSAGE_CHARS && !message.chars().any(is_unprintable);
        Diagnostic {
            severity,
            code,
            span,
            message: match clean {
                true => message,
                false => sanitize(&message, MAX_MESSAGE_CHARS),
            },
            source_line: String::new(),
            source_skip: 0,
        }
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// Renders the diagnostic for a terminal, rustc style.
    pub fn render(&self, file: &str) -> String {
        let kind = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let Span { line, mut col, len } = self.span;
        let mut out = format!(
            "{file}:{line}:{col}: {kind}[{}]: {}\n",
            self.code, self.message
        );
        if line > 0 {
            // `attach_sources` kept a window of the line: shift the column
            // onto it (one more for the leading `…`).
            if self.source_skip > 0 {
                col = col.saturating_sub(self.source_skip) + 1;
            }
            let gutter = line.to_string();
            let pad = " ".repeat(gutter.len());
            // Tabs would shift the caret; show them as single spaces.
            let shown: String = self
                .source_line
                .chars()
                .map(|c| if c == '\t' { ' ' } else { c })
                .collect();
            let caret_pad = " ".repeat(col.saturating_sub(1) as usize);
            let carets = "^".repeat(len.clamp(1, 200) as usize);
            out.push_str(&format!(
                " {gutter} | {shown}\n {pad} | {caret_pad}{carets}\n"
            ));
        }
        out
    }
}

/// Most warnings reported at once; past it they are counted, not listed.
pub const MAX_WARNINGS: usize = 1000;

/// Keeps every error but only the first [`MAX_WARNINGS`] warnings, plus
/// one saying how many more there were.
pub(crate) fn cap_warnings(diags: &mut Vec<Diagnostic>) {
    let mut warnings = 0usize;
    let mut dropped = 0usize;
    diags.retain(|d| {
        if d.is_error() {
            return true;
        }
        warnings += 1;
        let keep = warnings <= MAX_WARNINGS;
        dropped += usize::from(!keep);
        keep
    });
    if dropped > 0 {
        diags.push(Diagnostic::warning(
            "too-many-warnings",
            Span::default(),
            format!("{dropped} more warnings not shown (only the first {MAX_WARNINGS} are)"),
        ));
    }
}

/// Fills in each diagnostic's offending line from the policy text: a
/// window of it around the column, never the whole of a huge line, with
/// unprintable characters escaped.
pub(crate) fn attach_sources(diags: &mut [Diagnostic], text: &str) {
    let lines: Vec<&str> = text.split('\n').collect();
    for d in diags {
        if let Some(l) = (d.span.line as usize)
            .checked_sub(1)
            .and_then(|i| lines.get(i))
        {
            let l = l.trim_end_matches('\r');
            let long = l.len() > SOURCE_WHOLE && l.chars().nth(SOURCE_WHOLE).is_some();
            let skip = match long {
                true => (d.span.col as usize).saturating_sub(SOURCE_CONTEXT + 1),
                false => 0,
            };
            let window: String = l.chars().skip(skip).take(SOURCE_WHOLE + 1).collect();
            let shown = sanitize(&window, SOURCE_WHOLE);
            d.source_skip = u32::try_from(skip).unwrap_or(u32::MAX);
            d.source_line = match skip {
                0 => shown,
                _ => format!("…{shown}"),
            };
        }
    }
}

/// A policy that could not be loaded, with every error found (and any warnings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    pub file: String,
    pub diagnostics: Vec<Diagnostic>,
}

impl PolicyError {
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.is_error())
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in self.errors() {
            f.write_str(&d.render(&self.file))?;
        }
        let n = self.errors().count();
        write!(
            f,
            "{}: {n} error{}",
            self.file,
            if n == 1 { "" } else { "s" }
        )
    }
}

impl std::error::Error for PolicyError {}
