//! The value rules of PROTOCOL.md (sections 4 and 7). A broken rule is answered `failed`
//! with the sentence returned here.

/// An address with exactly one `@`, a non-empty local part, a domain with a dot inside it,
/// at most 254 bytes, of printable ASCII without spaces or double quotes.
///
/// ASCII only, so that no two accounts can look alike (PROTOCOL.md section 4): Cyrillic or
/// fullwidth letters that copy Latin ones, zero-width and bidi characters, soft hyphens,
/// composed and decomposed accents were all once accepted beside the plain address. No
/// quotes: `"ann"@example.org` is a second account whose mail reaches `ann@example.org`.
pub fn email(e: &str) -> Result<(), &'static str> {
    if !e.bytes().all(|b| b.is_ascii_graphic() && b != b'"') {
        return Err("email must be printable ASCII without spaces or quotes (name@example.org)");
    }
    let ok = e.len() <= 254
        && match e.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && !domain.contains('@')
                    && domain.split('.').count() >= 2
                    && domain.split('.').all(|label| !label.is_empty())
            }
            None => false,
        };
    if !ok {
        return Err("email must look like name@example.org (at most 254 bytes)");
    }
    // The OTP must be mailed: an address no mail system accepts (RFC 5321/5322: at most 64
    // characters before the @, no empty dot-separated part) is refused here, as a rule of
    // registration, rather than later as a mail failure the client cannot fix by retrying.
    match e.parse::<lettre::Address>() {
        Ok(_) => Ok(()),
        Err(_) => Err("email is not a deliverable address (at most 64 characters before the @, no empty parts)"),
    }
}

/// 1 to 32 characters from `A-Z a-z 0-9 _ . -`.
pub fn username(u: &str) -> Result<(), &'static str> {
    if (1..=32).contains(&u.len()) && u.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)) {
        Ok(())
    } else {
        Err("username must be 1 to 32 characters from A-Z a-z 0-9 _ . -")
    }
}

/// 32 hex digits (an md5 digest), in either case.
pub fn md5_hex(p: &str) -> Result<(), &'static str> {
    if p.len() == 32 && p.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err("password must be the md5 digest of the password as 32 hex digits")
    }
}

/// Message text: at most 4,096 characters.
pub fn text(m: &str) -> Result<(), &'static str> {
    if m.len() <= 4096 || m.chars().count() <= 4096 {
        Ok(())
    } else {
        Err("message must be at most 4096 characters")
    }
}

/// Media: an http(s) URL of at most 2,048 characters.
pub fn media(m: &str) -> Result<(), &'static str> {
    if !(m.starts_with("http://") || m.starts_with("https://")) {
        return Err("media must be an http:// or https:// URL");
    }
    if m.len() > 2048 && m.chars().count() > 2048 {
        return Err("media must be at most 2048 characters");
    }
    Ok(())
}

/// A group's name: 1 to 64 characters, not only spaces, no control characters.
pub fn group_name(name: &str) -> Result<(), &'static str> {
    let n = name.chars().count();
    if n == 0 || n > 64 || name.trim().is_empty() {
        return Err("a group's name has 1 to 64 characters");
    }
    if name.chars().any(char::is_control) {
        return Err("a group's name has no control characters");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        for good in ["a@b.org", "first.last+tag@sub.example.co", "o'brien@b.de", "A-Z_09@x-y.example"] {
            assert!(email(good).is_ok(), "{good}");
        }
        let long = format!("{}@b.org", "a".repeat(250));
        let long_local = format!("{}@b.org", "a".repeat(65));
        for bad in [
            "",
            "a",
            "@b.org",
            "a@b",
            "a@@b.org",
            "a@b@c.org",
            "a b@c.org",
            "a@.org",
            "a@b.",
            &long,
            &long_local,
            "a..b@c.org",
        ] {
            assert!(email(bad).is_err(), "{bad}");
        }
    }

    /// Every lookalike of `ann@example.org` that an attacker registered beside it.
    #[test]
    fn lookalike_emails_are_refused() {
        for bad in [
            "\u{430}nn@example.org",   // Cyrillic a
            "ann\u{200b}@example.org", // zero-width space
            "an\u{ad}n@example.org",   // soft hyphen
            "\u{202e}ann@example.org", // right-to-left override
            "\u{ff41}nn@example.org",  // fullwidth a
            "ann@exa\u{301}mple.org",  // combining acute accent
            "ann@ex\u{e1}mple.org",    // precomposed a with acute
            "\"ann\"@example.org",     // quoted local part
            "ann@example.org\u{0}",    // NUL
            "ann@example.org\u{7f}",   // DEL
            "ann\t@example.org",
        ] {
            assert!(email(bad).is_err(), "{bad:?}");
        }
        assert!(email("ann@example.org").is_ok());
    }

    #[test]
    fn usernames() {
        assert!(username("A-z_0.9").is_ok());
        assert!(username(&"a".repeat(32)).is_ok());
        for bad in ["", "a b", "ü", "a@b", &"a".repeat(33)] {
            assert!(username(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn md5_digests() {
        assert!(md5_hex("5F4DCC3B5AA765D61D8327DEB882CF99").is_ok());
        assert!(md5_hex("5f4dcc3b5aa765d61d8327deb882cf9").is_err());
        assert!(md5_hex("5f4dcc3b5aa765d61d8327deb882cf9g").is_err());
    }

    #[test]
    fn text_counts_characters_not_bytes() {
        assert!(text(&"é".repeat(4096)).is_ok());
        assert!(text(&"é".repeat(4097)).is_err());
        assert!(media(&format!("https://{}", "é".repeat(2040))).is_ok());
        assert!(media("ftp://x").is_err());
    }
}
