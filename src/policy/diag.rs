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
    /// The offending line, filled in once the text is known.
    pub source_line: String,
}

impl Diagnostic {
    /// A syntax error: the line does not parse.
    pub fn syntax(span: Span, message: impl Into<String>) -> Self {
        Self::error("syntax", span, message)
    }

    pub fn error(code: &'static str, span: Span, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            code,
            span,
            message: message.into(),
            source_line: String::new(),
        }
    }

    pub fn warning(code: &'static str, span: Span, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            code,
            span,
            message: message.into(),
            source_line: String::new(),
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
        let Span { line, col, len } = self.span;
        let mut out = format!(
            "{file}:{line}:{col}: {kind}[{}]: {}\n",
            self.code, self.message
        );
        if line > 0 {
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

/// Fills in each diagnostic's offending line from the policy text.
pub(crate) fn attach_sources(diags: &mut [Diagnostic], text: &str) {
    let lines: Vec<&str> = text.split('\n').collect();
    for d in diags {
        if let Some(l) = (d.span.line as usize)
            .checked_sub(1)
            .and_then(|i| lines.get(i))
        {
            d.source_line = l.trim_end_matches('\r').to_string();
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
