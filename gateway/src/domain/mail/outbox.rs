//! Reading the outbox: the mail `zonegate dev` and the test suites "sent" as `.eml` files.
//!
//! One reader for every consumer (the unit tests, the end-to-end harness, the README's
//! walkthrough), so they agree on ordering and decoding: oldest first by file time, the body
//! decoded only where the mail says it is quoted-printable (our links go out as 7-bit text,
//! and a token starting with `3D` must survive as it is).

use std::path::{Path, PathBuf};

/// One mail from the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    /// The `To:` address, as written.
    pub to: String,
    pub subject: String,
    /// The body, decoded.
    pub body: String,
}

impl Mail {
    /// The token of the first link in the body (`...#token=<43 characters>`), if any.
    pub fn link_token(&self) -> Option<&str> {
        let start = self.body.find("#token=")? + "#token=".len();
        let token = self.body.get(start..start + 43)?;
        token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            .then_some(token)
    }
}

/// An outbox directory.
#[derive(Debug, Clone)]
pub struct Outbox {
    dir: PathBuf,
}

impl Outbox {
    pub fn new(dir: impl Into<PathBuf>) -> Outbox {
        Outbox { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every mail, oldest first. Unreadable files are skipped (a mail being written).
    pub fn mails(&self) -> Vec<Mail> {
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&self.dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|e| e == "eml"))
                    .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
            .iter()
            .filter_map(|(_, p)| std::fs::read_to_string(p).ok())
            .filter_map(|text| parse(&text))
            .collect()
    }

    /// The newest mail to `to` (compared case-insensitively) that carries a link token.
    pub fn newest_link_to(&self, to: &str) -> Option<Mail> {
        self.mails()
            .into_iter()
            .rev()
            .find(|m| m.to.eq_ignore_ascii_case(to) && m.link_token().is_some())
    }
}

/// Split a message into headers and body, and decode what needs decoding.
fn parse(text: &str) -> Option<Mail> {
    let text = text.replace("\r\n", "\n");
    let (head, body) = text.split_once("\n\n")?;
    let header = |name: &str| {
        head.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_owned())
            })
            .unwrap_or_default()
    };
    // The mailer picks the encoding by the lines (so by the port in a link, say): each is
    // read back.
    let encoding = header("Content-Transfer-Encoding");
    let body = if encoding.eq_ignore_ascii_case("quoted-printable") {
        decode_quoted_printable(body)
    } else if encoding.eq_ignore_ascii_case("base64") {
        use base64::Engine;
        let compact: String = body.split_whitespace().collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(compact)
            .ok()?;
        String::from_utf8(bytes).ok()?
    } else {
        body.to_owned()
    };
    Some(Mail {
        to: address(&header("To")),
        subject: header("Subject"),
        body,
    })
}

/// `Name <a@b>` or `a@b` to `a@b`.
fn address(field: &str) -> String {
    match (field.find('<'), field.rfind('>')) {
        (Some(start), Some(end)) if start < end => field[start + 1..end].to_owned(),
        _ => field.to_owned(),
    }
}

/// RFC 2045 quoted-printable: soft line breaks removed, `=XX` decoded (UTF-8 assumed).
fn decode_quoted_printable(body: &str) -> String {
    let joined = body.replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = (bytes[i] == b'=')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match decoded {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_base64_body_is_read_back() {
        let mail = parse(
            "To: bob@example.com\r\nContent-Transfer-Encoding: base64\r\n\r\nT3BlbiBodHRwczovL3gvYWNjZXB0LWludml0YXRpb24jdG9rZW49QUFBQUFB\r\nQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQQ==\r\n",
        )
        .unwrap();
        assert_eq!(mail.to, "bob@example.com");
        assert_eq!(
            mail.link_token(),
            Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        );
    }

    #[test]
    fn seven_bit_bodies_are_kept_and_quoted_printable_is_decoded() {
        let plain = "To: ada@example.com\r\nSubject: Verify\r\n\r\nOpen https://x/verify-email#token=3DAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA now\r\n";
        let m = parse(plain).unwrap_or_else(|| unreachable!());
        assert_eq!(m.to, "ada@example.com");
        assert_eq!(
            m.link_token(),
            Some("3DAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        );
        let qp = "To: Ada <ada@example.com>\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nCaf=C3=A9 #token=3DBBBBBBBBBBBBBBBB=\r\nBBBBBBBBBBBBBBBBBBBBBBBBBBB\r\n";
        let m = parse(qp).unwrap_or_else(|| unreachable!());
        assert_eq!(m.to, "ada@example.com");
        assert!(m.body.starts_with("Café"));
        assert_eq!(
            m.link_token(),
            Some("BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB")
        );
    }
}
