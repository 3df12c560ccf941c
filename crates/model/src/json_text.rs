//! A walk over JSON text that tells strings from structure, so that sizes
//! and depths can be read off a record before anything is built from it.

/// One piece of JSON text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token {
    /// A string, quotes included, as the byte range `start..end` (an
    /// unterminated string runs to the end of the text).
    Str {
        /// Offset of the opening quote.
        start: usize,
        /// Offset just past the closing quote.
        end: usize,
    },
    /// A byte outside every string that is not whitespace (a bracket, a
    /// comma, a colon, or part of a number or literal), with its offset.
    Byte(usize, u8),
}

/// The tokens of `text`, in order; whitespace between them is skipped.
pub fn tokens(text: &str) -> impl Iterator<Item = Token> + '_ {
    let bytes = text.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        while let Some(&b) = bytes.get(i) {
            let at = i;
            i += 1;
            match b {
                b' ' | b'\t' | b'\n' | b'\r' => {}
                b'"' => {
                    let mut escaped = false;
                    while let Some(&c) = bytes.get(i) {
                        i += 1;
                        if escaped {
                            escaped = false;
                        } else if c == b'\\' {
                            escaped = true;
                        } else if c == b'"' {
                            break;
                        }
                    }
                    return Some(Token::Str { start: at, end: i });
                }
                _ => return Some(Token::Byte(at, b)),
            }
        }
        None
    })
}

#[cfg(test)]
mod tests {
    use super::{Token, tokens};

    #[test]
    fn strings_hide_brackets_and_escaped_quotes() {
        let text = r#" {"a\"]" : [1, "}"]} "#;
        let got: Vec<Token> = tokens(text).collect();
        assert_eq!(
            got,
            [
                Token::Byte(1, b'{'),
                Token::Str { start: 2, end: 8 },
                Token::Byte(9, b':'),
                Token::Byte(11, b'['),
                Token::Byte(12, b'1'),
                Token::Byte(13, b','),
                Token::Str { start: 15, end: 18 },
                Token::Byte(18, b']'),
                Token::Byte(19, b'}'),
            ]
        );
    }

    #[test]
    fn an_unterminated_string_runs_to_the_end() {
        let got: Vec<Token> = tokens(r#"["ab"#).collect();
        assert_eq!(got, [Token::Byte(0, b'['), Token::Str { start: 1, end: 4 }]);
    }
}
