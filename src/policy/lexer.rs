//! Splits one policy line into words, commas and arrows, with columns.

use super::diag::Span;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tok<'a> {
    Word(&'a str),
    Comma,
    Arrow,
}

#[derive(Debug, Clone, Copy)]
pub struct Token<'a> {
    pub tok: Tok<'a>,
    pub span: Span,
}

/// Tokenizes one line; `#` starts a comment that runs to the end of the line.
pub fn lex_line<'a>(line_no: u32, text: &'a str) -> Vec<Token<'a>> {
    let mut out = Vec::new();
    let mut word_start: Option<(usize, u32)> = None;
    let mut col: u32 = 0;
    let mut iter = text.char_indices().peekable();
    let flush = |out: &mut Vec<Token<'a>>, start: Option<(usize, u32)>, end: usize, col: u32| {
        if let Some((b, c)) = start {
            if let Some(w) = text.get(b..end) {
                out.push(Token {
                    tok: Tok::Word(w),
                    span: Span {
                        line: line_no,
                        col: c,
                        len: col - c,
                    },
                });
            }
        }
    };
    while let Some((i, ch)) = iter.next() {
        col += 1;
        let arrow_len = match ch {
            '→' => Some(1),
            '-' if iter.peek().map(|&(_, c)| c) == Some('>') => Some(2),
            _ => None,
        };
        if ch == '#' {
            flush(&mut out, word_start.take(), i, col);
            return out;
        } else if ch.is_whitespace() {
            flush(&mut out, word_start.take(), i, col);
        } else if ch == ',' {
            flush(&mut out, word_start.take(), i, col);
            out.push(Token {
                tok: Tok::Comma,
                span: Span {
                    line: line_no,
                    col,
                    len: 1,
                },
            });
        } else if let Some(len) = arrow_len {
            flush(&mut out, word_start.take(), i, col);
            if len == 2 {
                iter.next();
            }
            out.push(Token {
                tok: Tok::Arrow,
                span: Span {
                    line: line_no,
                    col,
                    len,
                },
            });
            col += len - 1;
        } else if word_start.is_none() {
            word_start = Some((i, col));
        }
    }
    flush(&mut out, word_start.take(), text.len(), col + 1);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_commas_arrows_and_comments() {
        let toks = lex_line(3, "allow role:a,role:b->svc  # hi, there");
        let kinds: Vec<Tok<'_>> = toks.iter().map(|t| t.tok).collect();
        assert_eq!(
            kinds,
            vec![
                Tok::Word("allow"),
                Tok::Word("role:a"),
                Tok::Comma,
                Tok::Word("role:b"),
                Tok::Arrow,
                Tok::Word("svc")
            ]
        );
        assert_eq!(
            toks[1].span,
            Span {
                line: 3,
                col: 7,
                len: 6
            }
        );
        assert_eq!(
            toks[4].span,
            Span {
                line: 3,
                col: 20,
                len: 2
            }
        );
        assert_eq!(
            toks[5].span,
            Span {
                line: 3,
                col: 22,
                len: 3
            }
        );
        let uni = lex_line(1, "é → x");
        assert_eq!(
            uni[1].span,
            Span {
                line: 1,
                col: 3,
                len: 1
            }
        );
        assert_eq!(
            uni[2].span,
            Span {
                line: 1,
                col: 5,
                len: 1
            }
        );
        assert_eq!(
            lex_line(1, "web-1 8000-8100")[1].tok,
            Tok::Word("8000-8100")
        );
    }
}
