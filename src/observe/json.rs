//! A tiny JSON object writer for flat, one-line records: keys in the order
//! written, strings escaped per RFC 8259. Enough for the flow log without a
//! serialisation framework on the packet-adjacent path.

use std::fmt::Write;

/// Builds one JSON object into a reusable string.
pub struct Obj<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> Obj<'a> {
    /// Starts an object at the end of `out`.
    pub fn new(out: &'a mut String) -> Obj<'a> {
        out.push('{');
        Obj { out, first: true }
    }

    fn key(&mut self, k: &str) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        escape(self.out, k);
        self.out.push(':');
    }

    pub fn str(&mut self, k: &str, v: &str) -> &mut Self {
        self.key(k);
        escape(self.out, v);
        self
    }

    /// A value written with `Display` and escaped as a string.
    pub fn display(&mut self, k: &str, v: impl std::fmt::Display) -> &mut Self {
        self.key(k);
        let start = self.out.len();
        let _ = write!(self.out, "{v}");
        let raw = self.out.split_off(start);
        escape(self.out, &raw);
        self
    }

    pub fn num(&mut self, k: &str, v: u64) -> &mut Self {
        self.key(k);
        let _ = write!(self.out, "{v}");
        self
    }

    pub fn strs<S: AsRef<str>>(&mut self, k: &str, v: &[S]) -> &mut Self {
        self.key(k);
        self.out.push('[');
        for (i, s) in v.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            escape(self.out, s.as_ref());
        }
        self.out.push(']');
        self
    }

    pub fn end(self) {
        self.out.push('}');
    }
}

/// Appends `s` as a JSON string literal.
pub fn escape(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_orders() {
        let mut s = String::new();
        let mut o = Obj::new(&mut s);
        o.str("a", "q\"\\\n\u{1}é")
            .num("b", 7)
            .strs("c", &["x", "y\""])
            .display("d", 1.5);
        o.end();
        assert_eq!(
            s,
            r#"{"a":"q\"\\\n\u0001é","b":7,"c":["x","y\""],"d":"1.5"}"#
        );
        let mut e = String::new();
        Obj::new(&mut e).end();
        assert_eq!(e, "{}");
    }
}
