//! Redaction: how values that may carry credentials (URLs, malformed header items) are
//! shown in logs and errors without showing the secret.

/// A URL without user info or query (which may carry credentials).
pub(crate) fn redact_url(url: &str) -> String {
    let no_query = url.split(['?', '#']).next().unwrap_or(url);
    match no_query.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((_, host)) if !host.contains('/') || rest.find('@') < rest.find('/') => {
                format!("{scheme}://***@{host}")
            }
            _ => no_query.to_string(),
        },
        None => no_query.to_string(),
    }
}

/// Describes a malformed item without showing any of it (it may be a secret).
pub(crate) fn redact_item(item: &str) -> String {
    format!("an item of {} characters", item.chars().count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_credentials_and_queries() {
        assert_eq!(
            redact_url("https://user:pw@host:4318/v1/metrics"),
            "https://***@host:4318/v1/metrics"
        );
        assert_eq!(
            redact_url("http://host/v1/metrics?api-key=x"),
            "http://host/v1/metrics"
        );
        assert_eq!(
            redact_url("http://127.0.0.1:4318/v1/metrics"),
            "http://127.0.0.1:4318/v1/metrics"
        );
    }
}
