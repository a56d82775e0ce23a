//! `Email`: a trimmed, lower-cased, syntactically valid address. Parse, don't validate.

use std::fmt;
use std::str::FromStr;

use crate::error::AppError;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, AppError> {
        let candidate = raw.trim().to_lowercase();
        let invalid = || AppError::validation("email is not a valid address");
        if candidate.len() > 254 {
            return Err(invalid());
        }
        let parsed = email_address::EmailAddress::from_str(&candidate).map_err(|_| invalid())?;
        // Display names and IP-literal domains are legal RFC 5322 but not login addresses.
        let domain = parsed.domain();
        if candidate.contains(['<', '>', ' ']) || domain.starts_with('[') || !domain.contains('.') {
            return Err(invalid());
        }
        Ok(Self(candidate))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises() {
        assert_eq!(
            Email::parse("  Ada@Example.COM ").unwrap().as_str(),
            "ada@example.com"
        );
    }

    #[test]
    fn rejects_bad_addresses() {
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@localhost",
            "a b@example.com",
            "Ada <ada@example.com>",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
