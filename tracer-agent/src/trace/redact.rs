//! Credentials in query strings: the values of parameters that carry a secret (a password, a
//! token, an API key, a URL signature) are replaced by `REDACTED` in `url.query` and `url.full`,
//! as the OpenTelemetry HTTP conventions ask for their default list (`AWSAccessKeyId`,
//! `Signature`, `sig`, `X-Goog-Signature`), which is extended here with the common names of
//! passwords, tokens and keys. The parameter names stay, so a span still shows which were sent.
//! Names are compared without regard to case, as sent (not percent-decoded).

/// Query parameters whose values are never exported (lowercase).
pub const SECRET_PARAMS: [&str; 22] = [
    // The OpenTelemetry conventions' defaults.
    "awsaccesskeyid",
    "signature",
    "sig",
    "x-goog-signature",
    // Presigned URLs of other object stores.
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
    // Passwords, tokens and keys by their usual names.
    "password",
    "passwd",
    "pwd",
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "client_secret",
    "secret",
    "api_key",
    "apikey",
    "api-key",
    "key",
    "auth",
    "session",
];

/// What a redacted value becomes.
pub const REDACTED: &str = "REDACTED";

fn is_secret(name: &str) -> bool {
    SECRET_PARAMS.iter().any(|s| s.eq_ignore_ascii_case(name))
}

/// The name of a `name=value` parameter whose value must go.
fn secret(part: &str) -> Option<&str> {
    part.split_once('=')
        .filter(|(name, value)| !value.is_empty() && is_secret(name))
        .map(|(name, _)| name)
}

/// `query` (without the `?`) with the values of secret parameters replaced; `None` when
/// nothing needs replacing (the caller keeps its zero-copy slice then).
#[must_use]
pub fn query(query: &str) -> Option<String> {
    if !query.split('&').any(|part| secret(part).is_some()) {
        return None;
    }
    let mut out = String::with_capacity(query.len());
    for (i, part) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match secret(part) {
            Some(name) => {
                out.push_str(name);
                out.push('=');
                out.push_str(REDACTED);
            }
            None => out.push_str(part),
        }
    }
    Some(out)
}

/// A URL (or request target) with the secret query values replaced; `None` when nothing needs
/// replacing. A fragment is never sent to a server, so the query runs to the end.
#[must_use]
pub fn url(url: &str) -> Option<String> {
    let (before, q) = url.split_once('?')?;
    query(q).map(|q| format!("{before}?{q}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_values_are_replaced_and_names_kept() {
        assert_eq!(
            query("user=ann&password=hunter2&page=2").as_deref(),
            Some("user=ann&password=REDACTED&page=2")
        );
        assert_eq!(
            query("X-Goog-Signature=ab12&Token=t&sig=").as_deref(),
            Some("X-Goog-Signature=REDACTED&Token=REDACTED&sig=")
        );
        assert_eq!(query("page=2&sort=asc"), None, "nothing to redact: no copy");
        assert_eq!(
            query("password"),
            None,
            "a name without a value carries nothing"
        );
        assert_eq!(query("passwords=x&keys=y"), None, "whole names only");
    }

    #[test]
    fn urls_keep_everything_but_the_secret_values() {
        assert_eq!(
            url("http://h:1/p?a=1&api_key=k&b=2").as_deref(),
            Some("http://h:1/p?a=1&api_key=REDACTED&b=2")
        );
        assert_eq!(url("http://h:1/p?a=1"), None);
        assert_eq!(url("/p"), None);
    }
}
