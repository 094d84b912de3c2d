//! The serial console as text people (and models) read.

/// Console bytes as text: terminal escape sequences (colours, cursor moves),
/// carriage returns and other control characters removed.
pub fn console_text(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        if c == '\r' || (c.is_control() && c != '\n' && c != '\t') {
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_escapes_are_removed() {
        assert_eq!(
            console_text("[\u{1b}[0;32m  OK  \u{1b}[0m] Started\r\nlogin: ".as_bytes()),
            "[  OK  ] Started\nlogin: "
        );
    }
}
